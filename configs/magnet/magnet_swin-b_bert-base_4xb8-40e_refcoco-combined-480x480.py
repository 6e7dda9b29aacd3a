# MagNet in the paper's "multiple datasets" setting (Table 1, MagNet‡): one model trained on the train
# splits of RefCOCO + RefCOCO+ + G-Ref (UMD) with every val/test image of the three removed
# (configs/_base_/datasets/refcoco_combined.py), then scored on every split of the three. The released
# multi-dataset model was evaluated at 448x448; this config keeps the 480x480 protocol of the others.
#   bash tools/dist_train.sh configs/magnet/magnet_swin-b_bert-base_4xb8-40e_refcoco-combined-480x480.py 4
#   bash tools/dist_test.sh ... CKPT 4 --cfg-options test_dataloader.dataset.dataset_name=refcocog \
#       test_dataloader.dataset.split_by=umd test_dataloader.dataset.split=test
_base_ = [
    '../_base_/models/magnet_swin-b_bert-base.py', '../_base_/datasets/refcoco_combined.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40e.py'
]
train_dataloader = dict(batch_size=8)
auto_scale_lr = dict(enable=False, base_batch_size=32)
