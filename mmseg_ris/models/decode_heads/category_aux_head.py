"""CategoryAuxHead: training-only category segmentation of every object in the image."""
from typing import Sequence

from torch import Tensor

from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from .ris_decode_head import split_backbone_output, stack_category_maps


@MODELS.register_module()
class CategoryAuxHead(FCNHead):
    """An auxiliary head that segments all objects of the image by category.

    Referring expressions teach object categories slowly: a word like "star"
    or "cup" only pays off when the model already tells the objects apart.
    Full-size models bring that knowledge from ImageNet-pretrained
    backbones. A model trained from scratch (the tiny configs) can learn it
    from the dataset's own instance annotations instead: this head predicts
    :class:`LoadCategoryMap`'s ``gt_category_map`` (category id per pixel, 0
    for background) from one backbone level with mmseg's :class:`FCNHead`
    and a cross-entropy loss. It is an ``auxiliary_head`` of
    :class:`RISEncoderDecoder`: used in training only, so inference cost and
    outputs do not change.

    On the tiny LAVT the same supervision helps far more when it is applied
    to the decode head's own last features (``category_aux`` of
    :class:`RISBaseDecodeHead`) than to a backbone map through this head
    (docs/get_started.md).

    Args:
        num_classes (int): Category ids + 1 (ids run from 1; 0 is the
            background); e.g. 91 for COCO's ids 1-90.
        **kwargs: :class:`FCNHead` / ``BaseDecodeHead`` arguments
            (``in_channels``, ``channels``, ``in_index``, ``num_convs``,
            ``loss_decode``, ``ignore_index``, ...).
    """

    def forward(self, inputs: Sequence) -> Tensor:
        """Category logits from the backbone output ``(feats, lang, lang_mask)``.

        Args:
            inputs (tuple): The vision-language backbone's output.

        Returns:
            Tensor: ``(B, num_classes, H_i, W_i)`` logits at level ``in_index``.
        """
        feats, _, _ = split_backbone_output(inputs, type(self).__name__)
        return super().forward(list(feats))

    def _stack_batch_gt(self, batch_data_samples: SampleList) -> Tensor:
        """Stack the samples' category maps, padding to the largest with ``ignore_index``.

        Raises:
            KeyError: If a sample has no ``gt_category_map``.
            ValueError: If a category id is not below ``num_classes``.
        """
        return stack_category_maps(batch_data_samples, self.num_classes, self.ignore_index,
                                   type(self).__name__)
