# The paper's "multiple datasets" training set: the train splits of RefCOCO (UNC), RefCOCO+ (UNC)
# and G-Ref (UMD) concatenated, with every image of the evaluation splits of all three removed, so
# that one model can be scored on all eight benchmark splits. (MagNet states only that the train
# splits were combined with test images removed; removing val images too keeps every reported split
# clean. Referents are not de-duplicated: an image may carry refs from several datasets.)
# Evaluation stays on RefCOCO val from refcoco.py; switch with
# --cfg-options test_dataloader.dataset.dataset_name=refcocog test_dataloader.dataset.split_by=umd
_base_ = ['./refcoco.py']

eval_images = [
    dict(dataset_name='refcoco', split_by='unc', splits=['val', 'testA', 'testB']),
    dict(dataset_name='refcoco+', split_by='unc', splits=['val', 'testA', 'testB']),
    dict(dataset_name='refcocog', split_by='umd', splits=['val', 'test']),
]

combined_train = dict(
    type='RefCOCODataset',
    data_root={{_base_.data_root}},
    split='train',
    data_prefix=dict(img_path={{_base_.img_prefix}}),
    exclude_images=eval_images,
    pipeline={{_base_.train_pipeline}})

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(combined_train, dataset_name='refcoco', split_by='unc'),
            dict(combined_train, dataset_name='refcoco+', split_by='unc'),
            dict(combined_train, dataset_name='refcocog', split_by='umd'),
        ]))
