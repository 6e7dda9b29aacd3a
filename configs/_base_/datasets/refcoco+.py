# RefCOCO+ (UNC splits: train / val / testA / testB); no absolute-location words in its expressions.
_base_ = ['./refcoco.py']
dataset_name = 'refcoco+'
train_dataloader = dict(dataset=dict(dataset_name=dataset_name))
val_dataloader = dict(dataset=dict(dataset_name=dataset_name))
test_dataloader = val_dataloader
