# -- model helpers (one line per module) --
from .conv_patch_embed import ConvPatchEmbed
from .fusion import check_fusion_inputs
from .swin_checkpoint import (SwinLoadReport, convert_official_swin,
                              extract_state_dict, is_official_swin,
                              load_checkpoint_file, load_pretrained_swin,
                              load_swin_state_dict,
                              resize_relative_position_table)

__all__ = [
    'ConvPatchEmbed', 'check_fusion_inputs', 'SwinLoadReport', 'convert_official_swin', 'extract_state_dict',
    'is_official_swin', 'load_checkpoint_file', 'load_pretrained_swin',
    'load_swin_state_dict', 'resize_relative_position_table'
]
