"""Text-aware encoder-decoder for referring image segmentation."""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig, OptSampleList, SampleList,
                         add_prefix)

OUTPUT_SIZES = ('input', 'original')


def stack_text_inputs(data_samples: SampleList) -> Tuple[Tensor, Tensor]:
    """Stack the token ids and attention masks that ride in the data samples.

    ``PackRISInputs`` stores them as data fields, so the data preprocessor's ``cast_data`` has already
    moved them to the model's device.

    Returns:
        tuple[Tensor, Tensor]: ``input_ids`` and ``attention_mask``, both (B, L) int64.
    """
    if not data_samples:
        raise ValueError('RISEncoderDecoder needs data samples carrying input_ids / attention_mask')
    ids, masks = [], []
    for i, ds in enumerate(data_samples):
        if 'input_ids' not in ds or 'attention_mask' not in ds:
            where = ds.metainfo.get('img_path', f'sample {i}')
            raise KeyError(f'{where}: data sample has no input_ids/attention_mask; '
                           'put TokenizeText and PackRISInputs in the pipeline')
        ids.append(ds.input_ids.view(-1))
        masks.append(ds.attention_mask.view(-1))
    lengths = {t.numel() for t in ids}
    if len(lengths) != 1:
        raise ValueError(f'token sequences of one batch differ in length: {sorted(lengths)}; '
                         'TokenizeText pads every expression to max_length')
    return torch.stack(ids).long(), torch.stack(masks).long()


@MODELS.register_module()
class RISEncoderDecoder(BaseSegmentor):
    """Encoder-decoder for referring image segmentation.

    The backbone is a vision-language encoder (e.g. ``LangSwinTransformer``) that takes the image and the
    tokenised expression and returns ``(visual feature maps, language features, language mask)``; the
    decode head turns them into mask logits. Auxiliary heads (e.g. Mask Grounding) add training losses
    only: prediction never runs them, so inference cost and outputs do not depend on them.

    Args:
        backbone (dict): Vision-language encoder config.
        decode_head (dict): Mask head config (a ``RISBaseDecodeHead``).
        auxiliary_head (dict | list[dict], optional): Training-only heads. A head whose
            ``requires_segmentor`` attribute is True receives ``segmentor=self`` in ``loss`` (to reuse the
            text encoder, for instance).
        train_cfg (dict, optional): Passed to the heads' ``loss``.
        test_cfg (dict, optional): ``output_size`` = ``'input'`` (default; logits resized to the network
            input, where both reference implementations score) or ``'original'`` (the image's original
            size, mmseg's habit).
        data_preprocessor (dict, optional): Usually ``SegDataPreProcessor``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 auxiliary_head: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.decode_head = MODELS.build(decode_head)
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        if auxiliary_head is None:
            self.auxiliary_head = None
        elif isinstance(auxiliary_head, (list, tuple)):
            self.auxiliary_head = nn.ModuleList(MODELS.build(h) for h in auxiliary_head)
        else:
            self.auxiliary_head = MODELS.build(auxiliary_head)
        self.train_cfg = train_cfg or dict()
        self.test_cfg = dict(output_size='input')
        self.test_cfg.update(test_cfg or dict())
        if self.test_cfg['output_size'] not in OUTPUT_SIZES:
            raise ValueError(f"test_cfg.output_size must be one of {OUTPUT_SIZES}, "
                             f"got {self.test_cfg['output_size']!r}")

    # ------------------------------------------------------------------ features
    def extract_feat(self, inputs: Tensor, data_samples: OptSampleList = None):
        """Run the vision-language encoder on images and the samples' expressions."""
        input_ids, attention_mask = stack_text_inputs(data_samples)
        return self.backbone(inputs, input_ids, attention_mask)

    def encode_decode(self, inputs: Tensor, batch_data_samples: SampleList) -> Tensor:
        """Mask logits at the (padded) network input size."""
        x = self.extract_feat(inputs, batch_data_samples)
        metas = [ds.metainfo for ds in batch_data_samples]
        return self.decode_head.predict(x, metas, self.test_cfg)

    # ------------------------------------------------------------------ modes
    def _aux_heads(self) -> List[nn.Module]:
        if self.auxiliary_head is None:
            return []
        if isinstance(self.auxiliary_head, nn.ModuleList):
            return list(self.auxiliary_head)
        return [self.auxiliary_head]

    def loss(self, inputs: Tensor, data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of the decode head (``decode.*``) and the auxiliary heads (``aux.*`` / ``aux_i.*``)."""
        x = self.extract_feat(inputs, data_samples)
        losses = add_prefix(self.decode_head.loss(x, data_samples, self.train_cfg), 'decode')
        heads = self._aux_heads()
        for i, head in enumerate(heads):
            kwargs = dict(segmentor=self) if getattr(head, 'requires_segmentor', False) else {}
            head_losses = head.loss(x, data_samples, self.train_cfg, **kwargs)
            losses.update(add_prefix(head_losses, 'aux' if len(heads) == 1 else f'aux_{i}'))
        return losses

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Binary masks in ``pred_sem_seg`` and resized logits (or probabilities) in ``seg_logits``."""
        seg_logits = self.encode_decode(inputs, data_samples)
        return self.postprocess_result(seg_logits, data_samples)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        """Tensor mode: raw decode-head logits."""
        return self.decode_head.forward(self.extract_feat(inputs, data_samples))

    # ------------------------------------------------------------------ output
    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        """Crop padding, resize to the evaluation size and threshold.

        Two-channel heads predict by argmax (LAVT), one-channel heads by ``sigmoid > threshold``
        (MagNet).
        """
        for i, ds in enumerate(data_samples):
            meta = ds.metainfo
            logit = seg_logits[i:i + 1]
            pad = meta.get('img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
            left, right, top, bottom = pad
            h, w = logit.shape[-2:]
            logit = logit[..., top:h - bottom, left:w - right]
            key = 'img_shape' if self.test_cfg['output_size'] == 'input' else 'ori_shape'
            size = tuple(meta[key][:2])
            if tuple(logit.shape[-2:]) != size:
                logit = resize(logit, size=size, mode='bilinear',
                               align_corners=self.align_corners, warning=False)
            logit = logit[0]
            if logit.shape[0] > 1:
                pred = logit.argmax(dim=0, keepdim=True)
            else:
                logit = logit.sigmoid()
                pred = (logit > self.decode_head.threshold).to(logit)
            ds.set_data(dict(seg_logits=PixelData(data=logit),
                             pred_sem_seg=PixelData(data=pred.long())))
        return data_samples
