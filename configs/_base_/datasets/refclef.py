# RefCLEF (ReferItGame on saiapr_tc-12 images), UNC partition (train / val / testA / testB);
# set split_by='berkeley' for the Berkeley partition (train / val / test).
_base_ = ['./refcoco.py']
dataset_name = 'refclef'
img_prefix = 'images/saiapr_tc-12'
train_dataloader = dict(
    dataset=dict(dataset_name=dataset_name, data_prefix=dict(img_path=img_prefix)))
val_dataloader = dict(
    dataset=dict(dataset_name=dataset_name, data_prefix=dict(img_path=img_prefix)))
test_dataloader = val_dataloader
