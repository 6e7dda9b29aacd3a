# LAVT + Mask Grounding (MagNet paper, Table 3(d)): LAVT unchanged at inference, plus the training-only
# Mask Grounding head (8-layer masked-token predictor over [language, image, mask centre], weight 1.0).
_base_ = ['./lavt_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']
model = dict(
    auxiliary_head=dict(
        type='MaskGroundingHead',
        in_channels=1024,
        lang_channels=768,
        embed_dims=256,
        num_layers=8,
        context='text+image+mask',
        mask_input='center',
        mask_ratio=0.15,
        tokenizer={{_base_.tokenizer}},
        loss_weight=1.0))
