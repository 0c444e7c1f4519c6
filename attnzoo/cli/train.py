"""Train with mmengine's Runner from an mmengine Python config.

    attnzoo-train CONFIG [--work-dir DIR] [--resume [CKPT]] [--data-root DIR]
                  [--amp {fp16,bf16,none}] [--cfg-options k=v ...] [--launcher none|pytorch]
    attnzoo-train --list-configs

CONFIG is a file, or a config shipped with the package: ``attnzoo::classification/demo_digits.py``
(``attnzoo.cli.configs``). ``python tools/train.py ...`` in a checkout is the same command.

Distributed (DDP; NCCL on CUDA, gloo on CPU):

    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch

Resuming (``attnzoo.tasks.checkpointing``):

* ``--resume``: continue from the newest checkpoint of the work dir that loads (``epoch_<n>.pth`` /
  ``iter_<n>.pth`` and the file ``last_checkpoint`` names, highest step first); files that do not load
  (a truncated or corrupt file) are skipped with a warning naming them. Nothing to resume is an error.
* ``--resume auto``: the same, but start from scratch when there is nothing to resume.
* ``--resume CKPT``: continue from that file.

Every checkpoint and the ``last_checkpoint`` pointer is written atomically (a ``.part`` file renamed when
complete), and an old checkpoint is deleted only after its successor is complete, so a kill at any moment
(SIGKILL included) costs at most the work since the last complete checkpoint: the epoch in progress, or
the one whose checkpoint was being written. Under DDP rank 0 writes and picks the file; every rank resumes it.

The last log line is a summary, ``Final: top1=.. top5=.. epochs=.. iters=.. best_top1=.. time=..s``; after a
resume its best value and training time include the runs before the checkpoint.
"""
import argparse

from attnzoo.tasks import runtime  # first: without mmengine, the ImportError names the [train] extra
from attnzoo.tasks.compiling import COMPILE_MODES, apply_compile  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from attnzoo.cli.configs import ListConfigsAction, resolve_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a model (mmengine Runner).')
    p.add_argument('config', help='mmengine config file (configs/<task>/<name>.py), or a shipped one: '
                                  'attnzoo::<task>/<name>.py')
    p.add_argument('--list-configs', action=ListConfigsAction, help='list the shipped configs and exit')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const=True, default=None, metavar='auto|CKPT',
                   help='no value: resume from the newest checkpoint in the work dir that loads (an error if none); '
                        '`auto`: the same, or start from scratch if none; CKPT: resume from that file')
    p.add_argument('--data-root', help='override the dataset root of every dataloader')
    p.add_argument('--amp', choices=['fp16', 'bf16', 'none'],
                   help='mixed precision override (CPU supports bf16 only)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='override config entries, e.g. train_cfg.max_epochs=10 train_dataloader.batch_size=64')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                   help='job launcher; use `pytorch` under torchrun')
    p.add_argument('--compile', nargs='?', const='default', choices=COMPILE_MODES, metavar='MODE',
                   help='compile the network with torch.compile(mode=MODE, dynamic=False); MODE: '
                        f'{", ".join(COMPILE_MODES)} (default: default; reduce-overhead: CUDA graphs, needs '
                        'train_dataloader.drop_last=True), see attnzoo.tasks.compiling')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='fully unpickle the --resume / load_from file (it can run code): only for files you trust')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import attnzoo  # noqa: F401  registers the models with timm
    import attnzoo.tasks as tasks  # registers the task components with mmengine
    from attnzoo.tasks.checkpointing import configure_resume

    cfg = Config.fromfile(resolve_config(args.config))
    runtime.apply_common_overrides(cfg, args)
    if args.compile:
        apply_compile(cfg, args.compile)
    runtime.setup_launcher(cfg, args.launcher)
    configure_resume(cfg, args.resume, trusted=args.trust_checkpoint)
    runtime.setup_cpu_threads(cfg)
    tasks.register_checkpoint_loader(trusted=args.trust_checkpoint)

    runner = tasks.StrictRunner.from_cfg(cfg)  # strict load_from / resume
    try:
        runner.train()
    finally:
        runtime.release_dataloader_workers(runner)


if __name__ == '__main__':
    main()
