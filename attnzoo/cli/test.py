"""Evaluate a checkpoint with mmengine's Runner (the config's test dataloader and evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR] [--trust-checkpoint]
                         [--cfg-options k=v ...] [--launcher none|pytorch]

Prints ``Final: top1=.. top5=.. samples=.. time=..s``. Loading is strict: a checkpoint with a key that is
missing, unexpected or of another size (another width, class count or model) stops with the list of them.
The file is read tensors-only (plus the types of official and mmengine checkpoints); ``--trust-checkpoint``
unpickles it fully, which can run code: only for files you trust. Distributed evaluation:
``torchrun --nproc_per_node N tools/test.py CONFIG CKPT --launcher pytorch``.
"""
import argparse
import sys

from attnzoo.tasks import runtime  # first: without mmengine, the ImportError names the [train] extra
from mmengine.config import Config, DictAction  # noqa: E402

from attnzoo.cli.configs import ListConfigsAction, resolve_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate a checkpoint (mmengine Runner).')
    p.add_argument('config', help='mmengine config file, or a shipped one: attnzoo::<task>/<name>.py')
    p.add_argument('--list-configs', action=ListConfigsAction, help='list the shipped configs and exit')
    p.add_argument('checkpoint', help='checkpoint written by tools/train.py, or a bare state dict of the network '
                                      '(attnzoo or official layout, e.g. a released .pth)')
    p.add_argument('--work-dir', help='where the evaluation log goes (default work_dirs/<config name>)')
    p.add_argument('--data-root', help='override the dataset root of every dataloader')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='override config entries, e.g. test_dataloader.batch_size=256')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='fully unpickle CHECKPOINT (it can run code): only for files you trust')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import attnzoo  # noqa: F401
    import attnzoo.tasks as tasks
    from attnzoo.utils.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint, trusted=args.trust_checkpoint)
    cfg = Config.fromfile(resolve_config(args.config))
    runtime.apply_common_overrides(cfg, args)
    from_runner = is_runner_checkpoint(checkpoint)
    cfg.load_from = args.checkpoint if from_runner else None  # mmengine's own loading (EMA hooks included)
    cfg.resume = False
    runtime.setup_launcher(cfg, args.launcher)
    runtime.setup_cpu_threads(cfg)
    tasks.register_checkpoint_loader(trusted=args.trust_checkpoint)

    runner = tasks.StrictRunner.from_cfg(cfg)  # strict load_from
    if not from_runner:
        load_network_weights(runner, checkpoint, args.checkpoint)
    try:
        return runner.test()
    finally:
        runtime.release_dataloader_workers(runner)


def is_runner_checkpoint(checkpoint) -> bool:
    """Whether ``checkpoint`` was written by tools/train.py (mmengine: ``state_dict`` of the task wrapper)."""
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    return isinstance(state, dict) and (any(key.startswith('model.') for key in state) or 'message_hub' in checkpoint)


def load_network_weights(runner, checkpoint, path: str) -> None:
    """Load a bare state dict of the network, in attnzoo's or the official layout (through the family's
    ``checkpoint_filter_fn``), strictly: a key that is missing, unexpected or of another size stops with them."""
    from attnzoo.utils.checkpoint import load_state_dict_strict
    wrapper = getattr(runner.model, 'module', runner.model)
    network = getattr(wrapper, 'model', wrapper)  # classifiers keep the network in .model; segmentors are it
    filter_fn = getattr(sys.modules[type(network).__module__], 'checkpoint_filter_fn', None)
    state = filter_fn(checkpoint, network) if filter_fn is not None else checkpoint
    load_state_dict_strict(network, state, f'checkpoint={path!r}')


def run() -> None:
    """The ``attnzoo-test`` command: :func:`main` on ``sys.argv``. ``main`` returns the metrics dict to Python
    callers; a console command's return value would be taken for its exit status."""
    main()


if __name__ == '__main__':
    run()
