# MagNet (Chng et al., "Mask Grounding for Referring Image Segmentation", CVPR 2024).
# Fixed by the paper: Swin-B + BERT-base; BERT split into 4 equal stages (3/3/3/3) with a cross-modal
# alignment module (CAM, pyramid scales {1, 2, 3, 6}, bidirectional attention, tanh-gated residuals) at
# the end of every stage of both encoders; deformable pixel decoder + mask decoder; losses BCE 2.0,
# Dice 2.0, CAL 0.5 and Mask Grounding 1.0 with an 8-layer masked-token predictor over
# [language, image, mask centre]. See configs/magnet/README.md for what follows LAVT's recipe instead.
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
        # the decoder sees the fused stream itself
        out_norm=False,
        text_encoder=dict(
            type='BertLanguageEncoder',
            pretrained='pretrained/bert-base-uncased',
            stages=(3, 3, 3, 3),
            # LAVT's recipe (MagNet's released args.py is LAVT's): BERT layers 0-9 train
            trainable_layers=list(range(10)),
            train_embeddings=False),
        fusions=dict(type='CAM', pool_scales=(1, 2, 3, 6), num_heads=1),
        lang_stage_positions=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/swin_base_patch4_window12_384_22k.pth')),
    decode_head=dict(
        type='MagNetHead',
        in_channels=(128, 256, 512, 1024),
        channels=256,
        lang_channels=768,
        num_queries=1,
        # all four levels enter the deformable encoder (no extra FPN level); masks at stride 4
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            strides=[4, 8, 16, 32],
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=4,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=4, num_points=4,
                                       dropout=0.0, batch_first=True),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=128, normalize=True)),
        # 9 layers of masked cross-attention -> self-attention -> FFN, one learned query
        transformer_decoder=dict(
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0,
                                   batch_first=True),
                cross_attn_cfg=dict(embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0,
                                    batch_first=True),
                ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.0,
                             act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        positional_encoding=dict(num_feats=128, normalize=True),
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=True, avg_non_ignore=True, loss_weight=2.0,
                 loss_name='loss_bce'),
            dict(type='ForegroundDiceLoss', loss_weight=2.0),
        ],
        loss_cal=dict(type='CrossModalAlignmentLoss', loss_weight=0.5)),
    auxiliary_head=dict(
        type='MaskGroundingHead',
        in_channels=1024,
        lang_channels=768,
        embed_dims=256,
        num_layers=8,
        context='text+image+mask',
        mask_input='center',
        mask_ratio=0.15,
        tokenizer='pretrained/bert-base-uncased',  # the pipeline's TokenizeText directory
        loss_weight=1.0),
    train_cfg=dict(),
    test_cfg=dict(output_size='input'))
