# LAVT (Yang et al., CVPR 2022): Swin-B (window 12, ImageNet-22K 384) + BERT-base run in full first,
# pixel-word attention (PWAM) + language gate after each Swin stage (image side only), LAVT's simple
# top-down decoder, 2-class cross-entropy with class weights [0.9, 1.1], argmax prediction.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(480, 480))
model = dict(
    type='RISEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='LangSwinTransformer',
        pretrain_img_size=384,
        embed_dims=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        # LAVT's decoder sees norm_i(PWAM output)
        out_norm=True,
        text_encoder=dict(
            type='BertLanguageEncoder',
            pretrained='pretrained/bert-base-uncased',
            stages=(12, ),
            # LAVT's optimiser holds BERT layers 0-9 only: embeddings and layers 10-11 stay fixed
            trainable_layers=list(range(10)),
            train_embeddings=False),
        fusions=dict(type='PWAM', num_heads=1),
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/swin_base_patch4_window12_384_22k.pth')),
    decode_head=dict(
        type='LAVTHead',
        in_channels=(128, 256, 512, 1024),
        channels=512,
        num_classes=2,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, class_weight=[0.9, 1.1],
                         avg_non_ignore=True, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(output_size='input'))
# The last stage's gated stream goes nowhere (no patch merging after stage 4; the decoder reads the PWAM
# output), so its gate gets no gradient; DDP must tolerate that, as LAVT's own training script does.
find_unused_parameters = True
