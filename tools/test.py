#!/usr/bin/env python
"""Evaluate a checkpoint with mmengine's Runner (the config's test dataloader and evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch]

Prints ``Final: top1=.. top5=.. samples=.. time=..s``. Distributed evaluation:
``torchrun --nproc_per_node N tools/test.py CONFIG CKPT --launcher pytorch``.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmengine.config import Config, DictAction  # noqa: E402

from train import apply_common_overrides  # noqa: E402  (tools/train.py)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate a checkpoint (mmengine Runner).')
    p.add_argument('config', help='mmengine config file')
    p.add_argument('checkpoint', help='checkpoint written by tools/train.py (or any state dict mmengine loads)')
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
    cfg.load_from = args.checkpoint
    cfg.resume = False
    tasks.setup_launcher(cfg, args.launcher)
    tasks.setup_cpu_threads(cfg)
    tasks.allow_trusted_checkpoints()

    runner = Runner.from_cfg(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
