"""Distributed set-up helpers shared by tools/train.py and tools/test.py."""
import datetime

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


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


def close_distributed() -> None:
    """Tear the process group down before the interpreter exits.

    mmengine leaves it open; with gloo a rank then sometimes aborts while
    exiting (``terminate called without an active exception``, exit status
    -6) after all work is done, and the launcher reports the whole job as
    failed. The barrier lets every rank finish its last collective first.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


