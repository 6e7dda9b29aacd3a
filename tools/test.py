"""Test (evaluate) a referring segmentor (mmseg's tools/test.py, with mmseg_ris registered).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show-dir DIR] [--cfg-options ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]

``--out DIR`` keeps the per-sentence results (I, U, IoU, ids) and the predicted masks in DIR;
``--show-dir DIR`` writes prediction-vs-ground-truth renders with the expression.
"""
import argparse
import datetime
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmseg_ris  # noqa: F401


def init_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without CUDA (several CPU processes).

    mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` before
    creating the process group, and its model wrapper passes
    ``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``; both fail on a
    CPU-only machine. Here the process group is created first (the runner
    then skips its own initialisation) and DDP gets ``device_ids=None``, as
    PyTorch requires for CPU modules. Nothing changes when CUDA is available.

    Args:
        cfg (Config): The config; ``model_wrapper_cfg`` may be filled in.
        launcher (str): The ``--launcher`` argument.

    Raises:
        ValueError: If the configured backend needs CUDA (anything but gloo).
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise ValueError(
            f'env_cfg.dist_cfg.backend={backend!r} needs CUDA, which this machine lacks; use '
            "--cfg-options env_cfg.dist_cfg.backend=gloo for distributed runs on CPU")
    if not torch_dist.is_initialized():
        if dist_cfg.get('timeout') is not None:
            # mmengine gives the timeout in seconds; torch wants a timedelta
            dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend=backend, **dist_cfg)
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a referring segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the evaluation metrics')
    parser.add_argument('--out', type=str, help='directory for per-sentence results and predicted masks')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted predictions are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, e.g. test_dataloader.dataset.split=testA')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError('--show / --show-dir need default_hooks.visualization in the config '
                           '(configs/_base_/default_runtime.py defines it)')
    hook = default_hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        hook['show_dir'] = args.show_dir
    return cfg


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    init_cpu_distributed(cfg, args.launcher)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
