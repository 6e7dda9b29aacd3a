# RefCOCOg (G-Ref), Google partition: train / val (its test split was never released).
_base_ = ['./refcoco.py']
dataset_name = 'refcocog'
split_by = 'google'
train_dataloader = dict(dataset=dict(dataset_name=dataset_name, split_by=split_by))
val_dataloader = dict(dataset=dict(dataset_name=dataset_name, split_by=split_by))
test_dataloader = val_dataloader
