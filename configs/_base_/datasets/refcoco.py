# RefCOCO (UNC splits: train / val / testA / testB), LAVT's protocol: square 480x480 input, 20 BERT tokens,
# one random sentence per referent at every training fetch, every sentence evaluated at the resized size.
dataset_type = 'RefCOCODataset'
data_root = 'data/'
dataset_name = 'refcoco'
split_by = 'unc'
img_prefix = 'images/mscoco/images/train2014'  # RefSegformer's layout: 'images/mscoco/train2014'
img_scale = (480, 480)
# The tokenizer directory is named once here; the text encoder config reuses it.
tokenizer = 'pretrained/bert-base-uncased'
max_tokens = 20

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='TokenizeText', tokenizer=tokenizer, max_length=max_tokens),
    dict(type='PackRISInputs'),
]
# LoadRefMask before Resize: the ground truth is resized with the image (nearest) and scored at 480x480,
# as both reference implementations do. Move LoadRefMask after Resize and set the segmentor's
# test_cfg.output_size='original' to score at the original image size instead.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='TokenizeText', tokenizer=tokenizer, max_length=max_tokens),
    dict(type='PackRISInputs'),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        dataset_name=dataset_name,
        split_by=split_by,
        split='train',
        data_prefix=dict(img_path=img_prefix),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        dataset_name=dataset_name,
        split_by=split_by,
        split='val',
        data_prefix=dict(img_path=img_prefix),
        pipeline=test_pipeline))
# Other splits: --cfg-options test_dataloader.dataset.split=testA
test_dataloader = val_dataloader
val_evaluator = dict(type='RISMetric', eval_resolution='input')
test_evaluator = val_evaluator
