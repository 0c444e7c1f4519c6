"""The glue the command-line tools (:mod:`attnzoo.cli`) share around mmengine's Runner: the launcher, the CPU
thread count, the shutdown of persistent data-loader workers, and the command-line overrides of a config.
"""
import os
import os.path as osp

import torch

__all__ = ['apply_common_overrides', 'release_dataloader_workers', 'setup_cpu_threads', 'setup_launcher']


def apply_common_overrides(cfg, args):
    """Apply the tools' ``--cfg-options``, ``--work-dir``, ``--data-root`` and ``--amp`` (``args``, argparse's
    namespace) to ``cfg`` (an mmengine ``Config``); without ``--work-dir`` the work dir is
    ``work_dirs/<config name>``."""
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif not cfg.get('work_dir'):
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if getattr(args, 'data_root', None):
        cfg.data_root = args.data_root
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(key) and cfg[key].get('dataset') is not None:
                cfg[key].dataset.data_root = args.data_root
    amp = getattr(args, 'amp', None)
    if amp and cfg.get('optim_wrapper'):
        if amp == 'none':
            cfg.optim_wrapper.type = 'OptimWrapper'
            cfg.optim_wrapper.pop('dtype', None)
            cfg.optim_wrapper.pop('loss_scale', None)
        else:
            cfg.optim_wrapper.type = 'AutoAmpOptimWrapper'
            cfg.optim_wrapper.dtype = 'float16' if amp == 'fp16' else 'bfloat16'


def setup_launcher(cfg, launcher: str) -> None:
    """Prepare ``cfg`` (an mmengine ``Config``) for ``launcher`` (none / pytorch / slurm / mpi).

    On CUDA mmengine does everything (NCCL, one device per process). On a CPU-only machine
    mmengine's ``init_dist`` would call ``torch.cuda.set_device`` and ``wrap_model`` would pass
    ``device_ids=[LOCAL_RANK]`` to DDP, both of which fail; so the process group is created here
    with gloo and the DDP wrapper gets ``device_ids=None``.
    """
    valid = ('none', 'pytorch', 'slurm', 'mpi')
    if launcher not in valid:
        raise ValueError(f'launcher must be one of {valid}, got {launcher!r}')
    cfg.launcher = launcher
    if launcher == 'none':
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if torch.cuda.is_available():
        dist_cfg.setdefault('backend', 'nccl')
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA; on CPU use `torchrun ... --launcher pytorch`')
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        if var not in os.environ:
            raise RuntimeError(f'--launcher pytorch needs ${var}; start the tool with '
                               f'`torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch`')
    dist_cfg['backend'] = 'gloo'
    import datetime

    import torch.distributed as dist
    if not dist.is_initialized():
        timeout = dist_cfg.get('timeout', 1800)
        dist.init_process_group(backend='gloo', timeout=datetime.timedelta(seconds=timeout))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def setup_cpu_threads(cfg) -> None:
    """Apply the config's optional ``cpu_threads`` (intra-op threads) on CPU-only runs.

    Small models gain little from a second thread, but when other processes share the cores the
    OpenMP workers of a multi-threaded step wait on each other (seen: 0.04 s -> 3 s per step on a
    busy 2-core machine). ``OMP_NUM_THREADS`` in the environment wins over the config.
    """
    n = cfg.get('cpu_threads')
    if n is None or torch.cuda.is_available() or 'OMP_NUM_THREADS' in os.environ:
        return
    if not isinstance(n, int) or n < 1:
        raise ValueError(f'cpu_threads must be a positive int, got {n!r}')
    torch.set_num_threads(n)


def release_dataloader_workers(runner) -> None:
    """Stop the persistent data-loader workers of the runner's built loops now, before Python exits.

    torch <= 2.11 registers, for a loader with ``persistent_workers`` and ``pin_memory``, an ``atexit`` join of
    each worker with a 5 s timeout, while nothing has told the worker to stop: every join times out. On the H200
    machines a run with 14 workers in each of its train and val loaders took about 140 s (28 x 5 s) to exit
    after its last log line. Shutting the iterators down first makes those joins return at once; newer torch
    shuts persistent workers down at exit itself, and this is then a no-op.
    """
    for name in ('_train_loop', '_val_loop', '_test_loop'):
        loader = getattr(getattr(runner, name, None), 'dataloader', None)  # a loop not built is a dict or None
        iterator = getattr(loader, '_iterator', None)  # the persistent workers' iterator, once one was made
        if iterator is not None and hasattr(iterator, '_shutdown_workers'):
            iterator._shutdown_workers()
            loader._iterator = None
