# MagNet on refcoco. The paper fixes the model and loss weights; the schedule follows LAVT's recipe
# (4 GPUs x 8 images, AdamW 5e-5, poly 0.9 per iteration, 40 epochs) since the paper is silent on it.
#   bash tools/dist_train.sh configs/magnet/magnet_swin-b_bert-base_4xb8-40e_refcoco-480x480.py 4
_base_ = [
    '../_base_/models/magnet_swin-b_bert-base.py', '../_base_/datasets/refcoco.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40e.py'
]
train_dataloader = dict(batch_size=8)
auto_scale_lr = dict(enable=False, base_batch_size=32)
