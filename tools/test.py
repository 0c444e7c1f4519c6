#!/usr/bin/env python
"""Evaluate a checkpoint with mmengine's Runner (the config's test dataloader and evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch]

Prints ``Final: top1=.. top5=.. samples=.. time=..s``. Distributed evaluation:
``torchrun --nproc_per_node N tools/test.py CONFIG CKPT --launcher pytorch``.
"""
import argparse
import os.path as osp
import pickle
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from train import apply_common_overrides  # noqa: E402  (tools/train.py)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate a checkpoint (mmengine Runner).')
    p.add_argument('config', help='mmengine config file')
    p.add_argument('checkpoint', help='checkpoint written by tools/train.py, or a bare state dict of the network '
                                      '(attnzoo or official layout, e.g. a released .pth)')
    p.add_argument('--work-dir', help='where the evaluation log goes (default work_dirs/<config name>)')
    p.add_argument('--data-root', help='override the dataset root of every dataloader')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='override config entries, e.g. test_dataloader.batch_size=256')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import attnzoo  # noqa: F401
    import attnzoo.tasks as tasks
    from mmengine.runner import Runner

    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint={args.checkpoint!r} does not exist')
    cfg = Config.fromfile(args.config)
    apply_common_overrides(cfg, args)
    checkpoint = read_checkpoint(args.checkpoint)
    from_runner = is_runner_checkpoint(checkpoint)
    cfg.load_from = args.checkpoint if from_runner else None  # mmengine's own loading (EMA hooks included)
    cfg.resume = False
    tasks.setup_launcher(cfg, args.launcher)
    tasks.setup_cpu_threads(cfg)
    tasks.allow_trusted_checkpoints()

    runner = Runner.from_cfg(cfg)
    if not from_runner:
        load_network_weights(runner, checkpoint, args.checkpoint)
    try:
        return runner.test()
    finally:
        tasks.release_dataloader_workers(runner)


def read_checkpoint(path: str):
    """Tensors-only unpickling for released weights; full unpickling only for what tools/train.py wrote
    (mmengine stores its message hub in the checkpoint). Only open checkpoints you trust."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location='cpu', weights_only=False)


def is_runner_checkpoint(checkpoint) -> bool:
    """Whether ``checkpoint`` was written by tools/train.py (mmengine: ``state_dict`` of the task wrapper)."""
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    return isinstance(state, dict) and (any(key.startswith('model.') for key in state) or 'message_hub' in checkpoint)


def load_network_weights(runner, checkpoint, path: str) -> None:
    """Load a bare state dict of the network, in attnzoo's or the official layout (through the family's
    ``checkpoint_filter_fn``), strictly: a key that does not fit stops with the offending keys."""
    wrapper = getattr(runner.model, 'module', runner.model)
    network = getattr(wrapper, 'model', wrapper)  # classifiers keep the network in .model; segmentors are it
    filter_fn = getattr(sys.modules[type(network).__module__], 'checkpoint_filter_fn', None)
    state = filter_fn(checkpoint, network) if filter_fn is not None else checkpoint
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f'checkpoint={path!r} does not fit {type(network).__name__}: missing keys {missing[:20]}, '
                         f'unexpected keys {unexpected[:20]}')


if __name__ == '__main__':
    main()
