"""Segment what an expression refers to in one image and save the overlay.

    python demo/image_demo.py IMAGE "expression" CONFIG CHECKPOINT --out-file out.png [--device cpu]
    python demo/image_demo.py IMAGE "the red circle" CONFIG CHECKPOINT --text "the blue square" \
        --out-file out.png          # writes out_0.png and out_1.png

Prints, per expression, the mask area and the score (mean predicted probability of the referent over
the mask, see :class:`mmseg_ris.apis.RISInferencer`).
"""
import argparse
import os
import os.path as osp

import mmcv

from mmseg_ris.apis import RISInferencer


def parse_args():
    parser = argparse.ArgumentParser(
        description='Referring image segmentation of one image: overlay with the expression')
    parser.add_argument('img', help='image file')
    parser.add_argument('expression', help='referring expression, e.g. "the man in red"')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--text', action='append', default=[], metavar='EXPRESSION',
                        help='a further expression for the same image (repeatable)')
    parser.add_argument('--out-file', default=None,
                        help='overlay PNG; with several expressions OUT_k.EXT per expression k')
    parser.add_argument('--device', default=None,
                        help='device, e.g. cpu or cuda:0 (default: cuda if available)')
    parser.add_argument('--no-score', action='store_true',
                        help='do not write the score and area on the overlay')
    return parser.parse_args()


def out_files(out_file, count):
    """``out.png`` for one expression, ``out_0.png``, ``out_1.png``, ... for several."""
    if count == 1:
        return [out_file]
    root, ext = osp.splitext(out_file)
    return [f'{root}_{k}{ext or ".png"}' for k in range(count)]


def main():
    args = parse_args()
    texts = [args.expression, *args.text]
    inferencer = RISInferencer(args.config, weights=args.checkpoint, device=args.device)
    result = inferencer(args.img, texts=texts, return_vis=args.out_file is not None,
                        show_score=not args.no_score)
    paths = out_files(args.out_file, len(texts)) if args.out_file else [None] * len(texts)
    for k, (pred, path) in enumerate(zip(result['predictions'], paths)):
        mask = pred['mask']
        area = int(mask.sum())
        print(f'[{k}] "{pred["text"]}": mask area {area} px '
              f'({100.0 * area / mask.size:.1f}% of {mask.shape[1]}x{mask.shape[0]}), '
              f'score {pred["score"]:.4f}')
        if path is not None:
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
            # the inferencer returns RGB renders; mmcv writes BGR
            mmcv.imwrite(mmcv.rgb2bgr(result['visualization'][k]), path)
            print(f'    overlay written to {path}')


if __name__ == '__main__':
    main()
