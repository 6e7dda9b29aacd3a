"""Web demo of referring image segmentation: upload an image, type expressions, see the masks.

    python demo/web_demo.py [CONFIG] [CHECKPOINT] [--device cpu] [--port 7860] [--host 127.0.0.1]

CONFIG defaults to ``configs/lavt/lavt_tiny_synthetic.py`` and CHECKPOINT to the latest checkpoint of
``bash tools/quickstart.sh`` (named by ``work_dirs/quickstart/train/last_checkpoint``). The page takes
one image and one or more expressions (one per line); *Segment* shows one overlay per expression (the
referent tinted, the rest dimmed, the expression written below) and a table of mask area and score.

The app runs offline: Gradio's analytics are switched off before it is imported, and its scripts,
styles and fonts are served by the app itself. Needs ``pip install -r requirements/demo.txt``.
"""
import argparse
import os
import os.path as osp
import sys
from collections.abc import Sequence

# Gradio reports usage to api.gradio.app unless this is False; set before it is imported so that no
# code of it runs with analytics on.
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

import numpy as np

try:
    import gradio as gr
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError('demo/web_demo.py needs Gradio: pip install -r requirements/demo.txt') from error

from mmseg_ris.apis import RISInferencer

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'lavt', 'lavt_tiny_synthetic.py')
# Where tools/quickstart.sh trains (its WORK default + /train); mmengine names the newest checkpoint
# in the work dir's `last_checkpoint` file.
DEFAULT_WORK_DIR = osp.join(REPO_ROOT, 'work_dirs', 'quickstart', 'train')
TABLE_HEADERS = ['expression', 'area (px)', 'area (%)', 'score']
ELEM_IDS = {'image': 'ris-image', 'text': 'ris-text', 'button': 'ris-segment',
            'gallery': 'ris-gallery', 'table': 'ris-table'}


def find_default_checkpoint(work_dir: str = DEFAULT_WORK_DIR) -> str:
    """The checkpoint named by ``work_dir/last_checkpoint`` (the quickstart's training run).

    Args:
        work_dir (str): An mmengine work dir.

    Returns:
        str: Path of an existing checkpoint file.

    Raises:
        FileNotFoundError: If ``last_checkpoint`` or the checkpoint it names is missing; the message
            says how to get one.
    """
    hint = ('run `bash tools/quickstart.sh` to train the default model, or pass a checkpoint: '
            'python demo/web_demo.py CONFIG CHECKPOINT')
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        raise FileNotFoundError(f'No checkpoint given and no {marker} (the quickstart has not '
                                f'trained yet): {hint}')
    with open(marker, encoding='utf-8') as f:
        named = f.read().strip()
    # mmengine writes an absolute path; a relative one is read against the work dir.
    path = named if osp.isabs(named) else osp.join(work_dir, named)
    if not named or not osp.isfile(path):
        raise FileNotFoundError(f'{marker} names {named!r}, which does not exist: {hint}')
    return path


def parse_expressions(text: str | None) -> list[str]:
    """One expression per non-empty line, surrounding spaces removed."""
    return [line.strip() for line in (text or '').splitlines() if line.strip()]


def segment(inferencer: RISInferencer, image: np.ndarray | None,
            text: str | None) -> tuple[list[np.ndarray], list[list]]:
    """Segment every expression of ``text`` in ``image`` (what the *Segment* button runs).

    Args:
        inferencer (RISInferencer): The model.
        image (np.ndarray, optional): (H, W, 3) uint8 RGB, as Gradio delivers images.
        text (str, optional): Expressions, one per line.

    Returns:
        tuple: The gallery value (one RGB overlay per expression, the expression written on it) and
        the table rows (expression, mask area in pixels, mask area in percent of the image, score).

    Raises:
        ValueError: If there is no image or no expression, or the image is not (H, W, 3) uint8.
    """
    if image is None:
        raise ValueError('Upload an image first.')
    expressions = parse_expressions(text)
    if not expressions:
        raise ValueError('Type at least one referring expression (one per line).')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'Expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype '
                         f'{image.dtype}.')
    # Gradio gives RGB; the inferencer follows mmcv (BGR arrays) and returns RGB renders.
    bgr = np.ascontiguousarray(image[..., ::-1])
    out = inferencer(bgr, texts=expressions, return_vis=True)
    gallery, rows = [], []
    for pred, vis in zip(out['predictions'], out['visualization']):
        area = int(pred['mask'].sum())
        gallery.append(vis)  # the render carries the expression; a Gradio caption would cover it
        rows.append([pred['text'], area, round(100.0 * area / pred['mask'].size, 2),
                     round(float(pred['score']), 4)])
    return gallery, rows


def build_demo(inferencer: RISInferencer, title: str = 'mmseg_ris: referring image segmentation',
               description: str | None = None) -> gr.Blocks:
    """Build the Gradio app around an inferencer (launch it with ``.launch()``).

    Args:
        inferencer (RISInferencer): The model to run.
        title (str): Page title and heading.
        description (str, optional): Markdown under the heading; defaults to the model's checkpoint.

    Returns:
        gr.Blocks: The app. Its components carry the element ids of :data:`ELEM_IDS`.
    """
    if description is None:
        weights = inferencer.weights or 'no checkpoint (random weights)'
        description = (f'Upload an image and type one or more referring expressions, one per line '
                       f'(e.g. *the red circle*). Model: `{osp.basename(str(weights))}`.')

    def run(image, text):
        try:
            return segment(inferencer, image, text)
        except ValueError as error:  # bad input: shown to the user, not a server error
            raise gr.Error(str(error)) from error

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f'## {title}\n{description}')
        with gr.Row():
            with gr.Column():
                image = gr.Image(label='image', type='numpy', image_mode='RGB', sources=['upload'],
                                 height=360, elem_id=ELEM_IDS['image'])
                text = gr.Textbox(label='referring expressions (one per line)', lines=3,
                                  placeholder='the red circle\nthe square left of the star',
                                  elem_id=ELEM_IDS['text'])
                button = gr.Button('Segment', variant='primary', elem_id=ELEM_IDS['button'])
            with gr.Column():
                # PNG: Gradio's default (WebP) is lossy and would blur the mask boundary.
                gallery = gr.Gallery(label='masks', format='png', columns=2, object_fit='contain',
                                     elem_id=ELEM_IDS['gallery'])
                table = gr.Dataframe(headers=TABLE_HEADERS,
                                     datatype=['str', 'number', 'number', 'number'],
                                     interactive=False, label='per expression',
                                     elem_id=ELEM_IDS['table'])
        button.click(run, inputs=[image, text], outputs=[gallery, table])
        text.submit(run, inputs=[image, text], outputs=[gallery, table])
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Web demo of referring image segmentation')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help='config file (default: %(default)s)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (default: the one named by '
                        'work_dirs/quickstart/train/last_checkpoint)')
    parser.add_argument('--device', default=None,
                        help='device, e.g. cpu or cuda:0 (default: cuda if available)')
    parser.add_argument('--port', type=int, default=7860, help='server port (default: %(default)s)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on; 0.0.0.0 for every interface '
                        '(default: %(default)s)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        checkpoint = args.checkpoint or find_default_checkpoint()
        for name, path in (('config', args.config), ('checkpoint', checkpoint)):
            if not osp.isfile(path):
                raise FileNotFoundError(f'{name} file {path!r} does not exist')
    except FileNotFoundError as error:
        sys.exit(f'web_demo: {error}')
    inferencer = RISInferencer(args.config, weights=checkpoint, device=args.device)
    demo = build_demo(inferencer)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, share=False,
                inbrowser=False)


if __name__ == '__main__':
    main()
