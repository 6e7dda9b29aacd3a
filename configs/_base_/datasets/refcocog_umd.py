# RefCOCOg (G-Ref), UMD partition: train / val / test.
_base_ = ['./refcoco.py']
dataset_name = 'refcocog'
split_by = 'umd'
train_dataloader = dict(dataset=dict(dataset_name=dataset_name, split_by=split_by))
val_dataloader = dict(dataset=dict(dataset_name=dataset_name, split_by=split_by))
test_dataloader = val_dataloader
