"""Referring image segmentation on images and expressions given in memory or as files."""
import copy
import logging
import os
import os.path as osp
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import NamedTuple

import mmcv
import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

from ..visualization import draw_ris_overlay

ImageType = str | os.PathLike | np.ndarray
TextType = str | Sequence[str]
InputsType = ImageType | dict | Sequence[dict]

# Pipeline steps that read annotations, which an inference input does not have.
ANNOTATION_TRANSFORMS = ('LoadRefMask', 'LoadAnnotations')
FILE_LOADER = 'LoadImageFromFile'
ARRAY_LOADER = 'LoadImageFromNDArray'
# Keys of one entry of the list form of ``inputs``.
ENTRY_KEYS = ('img', 'text')
# How many key names a warning or error about a checkpoint lists.
MAX_LISTED_KEYS = 10


class _ImageItem(NamedTuple):
    """One validated input image with its expressions."""
    index: int
    img: str | np.ndarray
    texts: list[str]
    arg: str  # how the caller named the image, for error messages
    stem: str  # file name stem of its outputs


def _type_name(transform_cfg: dict) -> str:
    """Name of a transform config's type (a string, or a class in pure-Python configs)."""
    t = transform_cfg.get('type')
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def _short_list(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f', ... ({more} more)' if more > 0 else '')


def foreground_probability(seg_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel probability of the referent from ``SegDataSample.seg_logits.data``.

    ``RISEncoderDecoder.postprocess_result`` stores the two logits of two-channel heads (prediction
    by argmax, so the probability is the softmax of channel 1) and the sigmoid probability of
    one-channel heads (prediction by threshold).

    Args:
        seg_logits (Tensor): (C, H, W) with C = 2 or 1.

    Returns:
        Tensor: (H, W) float probabilities.
    """
    if seg_logits.shape[0] > 1:
        return seg_logits.float().softmax(dim=0)[1]
    return seg_logits[0].float()


class RISInferencer:
    """Segment the object an expression refers to, in one or several images.

    It follows the structure of mmseg's ``MMSegInferencer`` (a config's test pipeline, ``preprocess``
    -> ``forward`` -> ``visualize`` -> ``postprocess``, ``out_dir/vis`` and ``out_dir/pred``) but is a
    standalone class rather than a subclass of mmengine's ``BaseInferencer``: that class treats every
    input as one sample and draws with the config's class-palette visualiser, while a referring
    sample is an (image, expression) pair, several expressions usually share one image (which is read
    once here), and renders carry the expression (the project's
    :func:`~mmseg_ris.visualization.draw_ris_overlay`).

    The test pipeline is the config's ``test_dataloader.dataset.pipeline`` (or ``test_pipeline``)
    without the annotation steps (``LoadRefMask``, ``LoadAnnotations``); ``LoadImageFromFile`` reads
    path inputs and is swapped for ``LoadImageFromNDArray`` (same arguments) for array inputs. The
    expression enters the record as ``text``, which ``TokenizeText`` tokenises and ``PackRISInputs``
    keeps in the metainfo.

    Masks are always returned at the original image size: the inferencer sets the segmentor's
    ``test_cfg['output_size'] = 'original'`` (logits are resized once, from the network output to the
    image), whatever the config says. A module passed in is changed in place accordingly.

    Examples:
        >>> inferencer = RISInferencer('configs/lavt/lavt_tiny_synthetic.py',
        ...                            weights='work_dirs/quickstart/train/iter_1200.pth')
        >>> out = inferencer('demo.jpg', texts=['red circle', 'the blue square left of it'])
        >>> out['predictions'][0]['mask'].shape   # (H, W) of demo.jpg, bool
        >>> out = inferencer([dict(img='a.jpg', text='left dog'), dict(img=array, text=['man', 'cup'])],
        ...                  batch_size=4, out_dir='outputs')

    Args:
        model (str | Config | dict | nn.Module): A config file, a loaded config, or a built
            ``RISEncoderDecoder``. A module must carry the config it was built from as ``model.cfg``
            (as ``mmseg.apis.init_model`` sets it), which supplies the test pipeline.
        weights (str, optional): Checkpoint file (an mmengine checkpoint with ``state_dict``, or a
            bare state dict), loaded with mmengine's ``load_checkpoint`` under
            ``torch.load(weights_only=True)``. Model weights missing from the checkpoint and
            checkpoint weights the model does not have are logged as a warning and kept in
            :attr:`missing_keys` / :attr:`unexpected_keys`. None keeps the weights the model is
            built with (random, or the config's pretrained parts). Defaults to None.
        device (str, optional): Device to run on; None picks ``'cuda'`` when available, else
            ``'cpu'``. Defaults to None.
        scope (str): Default registry scope when the config names none. Defaults to ``'mmseg'``.

    Raises:
        FileNotFoundError: If the config or checkpoint file does not exist.
        ValueError: If the config has no usable test pipeline, a module has no ``cfg``, or the
            checkpoint holds no weight of the model.
        RuntimeError: If checkpoint weights have other shapes than the model's (the checkpoint does
            not fit the config).
    """

    def __init__(self,
                 model: str | os.PathLike | Config | dict | nn.Module,
                 weights: str | None = None,
                 device: str | None = None,
                 scope: str = 'mmseg') -> None:
        self.cfg = self._load_config(model)
        init_default_scope(self.cfg.get('default_scope', scope) or scope)
        # first: a config without a usable pipeline fails before the model is built
        self._init_pipeline(self.cfg)
        if isinstance(model, nn.Module):
            net = model
        else:
            model_cfg = copy.deepcopy(self.cfg.model)
            model_cfg['train_cfg'] = None
            net = MODELS.build(model_cfg)
            net.cfg = self.cfg
        self._force_original_size(net, announce=isinstance(model, nn.Module))

        self.missing_keys: list[str] = []
        self.unexpected_keys: list[str] = []
        if weights is not None:
            self._load_weights(net, weights)
        else:
            print_log('RISInferencer: no weights given; the model keeps the weights it was built '
                      'with', logger='current', level=logging.WARNING)
        self.weights = weights

        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = device
        # SyncBN needs a process group even in eval mode on some devices; inference never syncs.
        net = revert_sync_batchnorm(net)
        self.model = net.to(device).eval()

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _load_config(model) -> Config:
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not osp.isfile(path):
                raise FileNotFoundError(f'RISInferencer: model config file {path!r} does not exist')
            return Config.fromfile(path)
        if isinstance(model, Config):
            return copy.deepcopy(model)
        if isinstance(model, dict):
            return Config(copy.deepcopy(dict(model)))
        if isinstance(model, nn.Module):
            cfg = getattr(model, 'cfg', None)
            if cfg is None:
                raise ValueError('RISInferencer: the model module has no `cfg` attribute; set '
                                 'model.cfg to the Config it was built from (it supplies the test '
                                 'pipeline), or pass the config instead of the module')
            return cfg if isinstance(cfg, Config) else Config(dict(cfg))
        raise TypeError(f'RISInferencer: model must be a config path, a Config or an nn.Module, '
                        f'got {type(model).__name__}')

    @staticmethod
    def _force_original_size(net: nn.Module, announce: bool) -> None:
        """Make the segmentor resize its logits to the original image (see the class docstring)."""
        test_cfg = getattr(net, 'test_cfg', None)
        if not isinstance(test_cfg, dict):
            raise TypeError(f'RISInferencer: the model ({type(net).__name__}) has no test_cfg '
                            'dict; expected a RISEncoderDecoder')
        if announce and test_cfg.get('output_size') != 'original':
            print_log(f"RISInferencer: the model's test_cfg.output_size changes from "
                      f"{test_cfg.get('output_size')!r} to 'original' (masks at the image size)",
                      logger='current', level=logging.INFO)
        test_cfg['output_size'] = 'original'

    def _load_weights(self, net: nn.Module, weights: str) -> None:
        """Load ``weights`` into ``net`` and check that they fit it."""
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f'RISInferencer: weights must be a checkpoint path or None, got '
                            f'{type(weights).__name__}')
        weights = os.fspath(weights)
        if '://' not in weights and not osp.isfile(weights):
            raise FileNotFoundError(f'RISInferencer: checkpoint (weights) {weights!r} does not '
                                    'exist')
        checkpoint = load_checkpoint(net, weights, map_location='cpu', strict=False,
                                     logger='current')
        state = checkpoint.get('state_dict', checkpoint)
        # load_checkpoint's default key revision: DDP's 'module.' prefix is dropped.
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        own = net.state_dict()
        mismatched = [
            f'{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}' for k, v in state.items()
            if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)
        ]
        if mismatched:
            raise RuntimeError(f'RISInferencer: {len(mismatched)} weights of {weights!r} have '
                               f'other shapes than the model built from the config (wrong '
                               f'config for this checkpoint?): {_short_list(mismatched)}')
        if not any(k in own for k in state):
            raise ValueError(f'RISInferencer: checkpoint {weights!r} holds none of the model\'s '
                             f'weights (wrong config for this checkpoint?)')
        self.missing_keys = [k for k in own
                             if k not in state and not k.endswith('num_batches_tracked')]
        self.unexpected_keys = [k for k in state if k not in own]
        if self.missing_keys:
            print_log(f'RISInferencer: {len(self.missing_keys)} model weights are not in '
                      f'{weights!r} and keep their initial values: '
                      f'{_short_list(self.missing_keys)}', logger='current',
                      level=logging.WARNING)
        if self.unexpected_keys:
            print_log(f'RISInferencer: {len(self.unexpected_keys)} weights of {weights!r} are not '
                      f'used by the model: {_short_list(self.unexpected_keys)}',
                      logger='current', level=logging.WARNING)

    def _init_pipeline(self, cfg: Config) -> None:
        """Split the test pipeline into image loading (once per image) and the rest (per pair)."""
        pipeline = None
        dataloader = cfg.get('test_dataloader')
        if isinstance(dataloader, dict) and isinstance(dataloader.get('dataset'), dict):
            pipeline = dataloader['dataset'].get('pipeline')
        if pipeline is None:
            pipeline = cfg.get('test_pipeline')
        if not pipeline:
            raise ValueError('RISInferencer: the config has neither test_dataloader.dataset.'
                             'pipeline nor test_pipeline')
        pipeline = [t for t in copy.deepcopy(list(pipeline))
                    if _type_name(t) not in ANNOTATION_TRANSFORMS]
        names = [_type_name(t) for t in pipeline]
        if FILE_LOADER not in names:
            raise ValueError(f'RISInferencer: {FILE_LOADER} is not in the test pipeline {names}')
        idx = names.index(FILE_LOADER)
        array_loader = dict(pipeline[idx], type=ARRAY_LOADER)
        self.pipeline_cfg = pipeline
        self.file_loader = Compose(pipeline[:idx + 1])
        self.array_loader = Compose(pipeline[:idx] + [array_loader])
        self.pipeline = Compose(pipeline[idx + 1:])

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_texts(texts, arg: str) -> list[str]:
        if texts is None:
            raise ValueError(f'{arg}: no referring expression given')
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f'{arg}: expected an expression (str) or a non-empty list of them, '
                             f'got {texts!r}')
        for k, text in enumerate(texts):
            where = arg if len(texts) == 1 else f'{arg}[{k}]'
            if not isinstance(text, str):
                raise TypeError(f'{where}: expression must be a str, got {type(text).__name__}')
            if not text.strip():
                raise ValueError(f'{where}: empty referring expression {text!r}')
        return list(texts)

    @staticmethod
    def _check_image(img, arg: str) -> str | np.ndarray:
        if isinstance(img, (str, os.PathLike)):
            path = os.fspath(img)
            if '://' not in path and not osp.isfile(path):
                raise FileNotFoundError(f'{arg}: image file {path!r} does not exist')
            return path
        if isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
                raise ValueError(f'{arg}: expected an (H, W, 3) uint8 BGR array, got shape '
                                 f'{img.shape} dtype {img.dtype}')
            return img
        raise TypeError(f'{arg}: expected an image path or an (H, W, 3) uint8 array, got '
                        f'{type(img).__name__}')

    def _inputs_to_list(self, inputs: InputsType, texts: TextType | None) -> list[_ImageItem]:
        """Validate the inputs into one item per image (see :meth:`__call__`)."""
        if isinstance(inputs, (str, os.PathLike, np.ndarray)):
            entries = [(inputs, self._check_texts(texts, 'texts'), 'inputs')]
        else:
            if texts is not None:
                raise ValueError('texts: give texts only with a single image; with a list of '
                                 'dict(img=..., text=...) each entry carries its expressions')
            if isinstance(inputs, dict):
                inputs = [inputs]
            if not isinstance(inputs, (list, tuple)) or not inputs:
                raise ValueError(f'inputs: expected an image (path or array) with texts, or a '
                                 f'non-empty list of dict(img=..., text=...), got {inputs!r:.80}')
            entries = []
            for i, entry in enumerate(inputs):
                arg = f'inputs[{i}]'
                if not isinstance(entry, dict):
                    raise TypeError(f'{arg}: expected dict(img=..., text=...), got '
                                    f'{type(entry).__name__}')
                unknown = sorted(set(entry) - set(ENTRY_KEYS))
                if unknown or 'img' not in entry:
                    raise ValueError(f'{arg}: expected keys {ENTRY_KEYS}, got {sorted(entry)}')
                entries.append((entry['img'],
                                self._check_texts(entry.get('text'), f"{arg}['text']"),
                                f"{arg}['img']"))
        items, seen = [], set()
        for i, (img, item_texts, arg) in enumerate(entries):
            img = self._check_image(img, arg)
            stem = (osp.splitext(osp.basename(img))[0] if isinstance(img, str) else f'array{i}')
            if stem in seen:  # two files of one name from different folders
                stem = f'{stem}-{i}'
            seen.add(stem)
            items.append(_ImageItem(i, img, item_texts, arg, stem))
        return items

    def _load(self, item: _ImageItem) -> dict:
        """Run the pipeline up to the image loader (once per image)."""
        if isinstance(item.img, np.ndarray):
            return self.array_loader({'img': item.img})
        try:
            return self.file_loader({'img_path': item.img})
        except Exception as error:  # decoding errors name neither the argument nor always the file
            raise ValueError(f'{item.arg}: could not read image {item.img!r}: {error}') from error

    # ------------------------------------------------------------------ stages
    def preprocess(self, items: list[_ImageItem],
                   batch_size: int = 1) -> Iterator[tuple[dict, list[tuple[_ImageItem, int, dict]]]]:
        """Yield collated batches of (image, expression) pairs, in input order.

        Args:
            items (list): From :meth:`_inputs_to_list`.
            batch_size (int): Pairs per batch.

        Yields:
            tuple: The collated batch (``inputs``, ``data_samples``) and, per pair, its image item,
            expression index and loaded image record.
        """

        def pairs():
            for item in items:
                loaded = self._load(item)
                for k in range(len(item.texts)):
                    yield item, k, loaded

        stream = pairs()
        while True:
            chunk = list(islice(stream, batch_size))
            if not chunk:
                return
            data = []
            for item, k, loaded in chunk:
                # deepcopy: several expressions share one loaded record
                record = copy.deepcopy(loaded)
                record['text'] = item.texts[k]
                data.append(self.pipeline(record))
            yield pseudo_collate(data), chunk

    def forward(self, data: dict) -> list[SegDataSample]:
        """Run the segmentor's ``test_step`` (preprocessing, prediction, post-processing)."""
        with torch.no_grad():
            return self.model.test_step(data)

    def visualize(self, image: np.ndarray, prediction: dict, show_score: bool = True) -> np.ndarray:
        """Render one prediction with :func:`~mmseg_ris.visualization.draw_ris_overlay`.

        Args:
            image (np.ndarray): The loaded (BGR) image at its original size.
            prediction (dict): One entry of ``predictions`` (see :meth:`__call__`).
            show_score (bool): Write the score and mask area under the expression.

        Returns:
            np.ndarray: BGR uint8 overlay.
        """
        if image.dtype != np.uint8:  # LoadImageFromFile(to_float32=True)
            image = np.clip(image, 0, 255).astype(np.uint8)
        caption = None
        if show_score:
            caption = (f"score {prediction['score']:.3f}   "
                       f"area {int(prediction['mask'].sum())} px")
        return draw_ris_overlay(image, prediction['mask'], prediction['text'], caption=caption)

    @staticmethod
    def postprocess(sample: SegDataSample, item: _ImageItem, k: int) -> dict:
        """Turn one predicted data sample into a prediction dict (see :meth:`__call__`)."""
        meta = sample.metainfo
        mask = sample.pred_sem_seg.data[0] == 1
        ori_shape = tuple(meta['ori_shape'][:2])
        if tuple(mask.shape) != ori_shape:
            raise RuntimeError(f'RISInferencer: predicted mask {tuple(mask.shape)} is not at the '
                               f'original size {ori_shape} ({item.arg})')
        prob = foreground_probability(sample.seg_logits.data)
        score = float(prob[mask].mean()) if bool(mask.any()) else 0.0
        return {'img_path': meta.get('img_path'), 'text': item.texts[k],
                    'mask': mask.cpu().numpy(), 'score': score}

    # ------------------------------------------------------------------ call
    def __call__(self,
                 inputs: InputsType,
                 texts: TextType | None = None,
                 batch_size: int = 1,
                 return_vis: bool = False,
                 out_dir: str = '',
                 show_score: bool = True) -> dict[str, list]:
        """Segment the referent of every (image, expression) pair.

        Args:
            inputs: One image, a path or an (H, W, 3) uint8 BGR array (mmcv's convention), whose
                expressions are ``texts``; or a list of ``dict(img=image, text=str | list[str])``,
                several images each with one or several expressions (a single such dict works too).
            texts (str | list[str], optional): The expression(s) for a single image; must be None
                with the list form.
            batch_size (int): (image, expression) pairs per forward pass; results do not depend on
                it. Defaults to 1.
            return_vis (bool): Render every prediction. Defaults to False.
            out_dir (str): If given, write ``out_dir/vis/<stem>_<k>.png`` (the render) and
                ``out_dir/pred/<stem>_<k>.png`` (the mask, 0 / 255) for expression ``k`` (0-based,
                per image) of every image; ``<stem>`` is the image file's name without extension,
                or ``array<i>`` for an array at position ``i`` of the inputs, with ``-<i>``
                appended when an earlier image had the same stem. Defaults to ''.
            show_score (bool): Write the score and mask area on the renders. Defaults to True.

        Returns:
            dict: ``predictions``, one dict per pair in input order (images in order, each image's
            expressions in order):

            - ``img_path`` (str | None): The image file (None for arrays).
            - ``text`` (str): The expression.
            - ``mask`` (np.ndarray): (H, W) bool at the image's original size.
            - ``score`` (float): Mean predicted probability of the referent over the mask's pixels
              (softmax of the referent channel for two-channel heads, the sigmoid for one-channel
              heads); 0.0 when the mask is empty. A confidence, not a calibrated probability.
            - ``vis_path``, ``pred_path`` (str): The written files, with ``out_dir`` only.

            ``visualization``: with ``return_vis`` or ``out_dir``, one RGB uint8 render per pair (the
            image with the mask tinted and everything else dimmed, enlarged when small, and the
            expression, score and area written below it); otherwise empty.

        Raises:
            FileNotFoundError: If an image file does not exist.
            ValueError: If an expression is empty, an array is not (H, W, 3) uint8, an image
                cannot be decoded, or the inputs are malformed (the message names the argument).
            TypeError: If an image or expression has the wrong type.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be an int >= 1, got {batch_size!r}')
        items = self._inputs_to_list(inputs, texts)
        render = bool(return_vis or out_dir)
        predictions, visualization = [], []
        for data, chunk in self.preprocess(items, batch_size):
            samples = self.forward(data)
            for sample, (item, k, loaded) in zip(samples, chunk):
                pred = self.postprocess(sample, item, k)
                if render:
                    vis = self.visualize(loaded['img'], pred, show_score)
                    if out_dir:
                        name = f'{item.stem}_{k}.png'
                        pred['vis_path'] = osp.join(out_dir, 'vis', name)
                        pred['pred_path'] = osp.join(out_dir, 'pred', name)
                        mmcv.imwrite(vis, pred['vis_path'])
                        mmcv.imwrite(pred['mask'].astype(np.uint8) * 255, pred['pred_path'])
                    visualization.append(np.ascontiguousarray(vis[..., ::-1]))
                predictions.append(pred)
        return {'predictions': predictions, 'visualization': visualization}
