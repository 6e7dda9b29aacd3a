"""Convert an official Microsoft Swin checkpoint to mmseg's Swin key names.

``LangSwinTransformer`` converts official checkpoints on the fly, so this
script is only needed to inspect a conversion or to feed the weights to code
that expects mmseg names (e.g. a stock mmseg ``SwinTransformer``). Unlike
mmseg's ``swin2mmseg.py`` it reads with ``torch.load(weights_only=True)``
and writes a plain ``{name: tensor}`` dict, loadable the same way.

Example::

    python tools/model_converters/swin2mmseg_ris.py \
        pretrained/swin_base_patch4_window12_384_22k.pth \
        pretrained/swin_base_patch4_window12_384_22k_mmseg.pth
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import torch

from mmseg_ris.models.utils.swin_checkpoint import (
    convert_official_swin,
    extract_state_dict,
    is_official_swin,
    load_checkpoint_file,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).

    Returns:
        argparse.Namespace: ``src`` and ``dst``.
    """
    parser = argparse.ArgumentParser(
        description='Convert an official Microsoft Swin checkpoint to '
        'mmseg SwinTransformer key names (weights_only safe).')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output file (.pth)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert ``src`` and write ``dst``.

    Args:
        argv (list[str], optional): Command-line arguments.

    Raises:
        ValueError: If ``src`` does not use official Swin names.
    """
    args = parse_args(argv)
    state_dict = extract_state_dict(load_checkpoint_file(args.src), args.src)
    if not is_official_swin(state_dict):
        raise ValueError(
            f'{args.src} does not use official Swin names (no layers.* / '
            f'patch_embed.proj.* key; first keys: {list(state_dict)[:5]}); '
            f'nothing to convert')
    converted = convert_official_swin(state_dict)
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(converted, args.dst)
    dropped = len(state_dict) - len(converted)
    print(f'{args.src}: {len(converted)} tensors written to {args.dst} '
          f'({dropped} dropped: classification head, attn_mask buffers)')


if __name__ == '__main__':
    main()
