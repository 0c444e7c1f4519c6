"""What to compile for ``tools/train.py --compile``: mmengine's own ``compile`` option (``torch.compile`` of the whole
``model.train_step``) against ``CompileHook`` (the task model's network, in place), counted on the digits demo::

    python benchmarks/compile_target.py [--epochs 2] [--out benchmarks/results/cpu_compile_target.txt]

Both train the digits DiNAT with mixup/cutmix on (as every ImageNet recipe) on a small synthetic folder for
``--epochs`` epochs with ``backend='eager'``: dynamo traces and guards as with Inductor, but generates no code, so
the counts come in seconds. Reported per target: dynamo's graphs, its graph breaks by reason, and its recompiles
(the ``Recompiling function`` records of ``torch._logging``'s ``recompiles`` artifact). See
``attnzoo/tasks/compiling.py`` for what the counts mean for training speed.
"""
import argparse
import logging
import os.path as osp
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / 'configs' / 'classification' / 'demo_digits.py'
RECOMPILES_LOGGER = 'torch._dynamo.guards.__recompiles'  # torch._logging's artifact logger of dynamo's guards


class _RecompileCounter(logging.Handler):
    """Counts the ``Recompiling function`` records dynamo logs."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 'Recompiling function' in record.getMessage()


def write_folder(root: str, images: int) -> None:
    """``root/{train,val}/<class>/*.JPEG``: 3 classes, ``images`` train and 2 val images per class, 32 px."""
    from PIL import Image
    rng = np.random.RandomState(0)
    for split, n in (('train', images), ('val', 2)):
        for c in range(3):
            folder = Path(root, split, f'n{c:08d}')
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.rand(32, 32, 3) * 60 + c * 80).astype(np.uint8)).save(folder / f'{i}.JPEG')


def count(target: str, root: str, work_dir: str, epochs: int) -> dict:
    """Train the digits demo with ``target`` (``'mmengine'``: ``cfg.compile``; ``'network'``: ``CompileHook``)
    and return dynamo's graphs, graph breaks (reason: count) and recompiles."""
    from mmengine.config import Config
    from torch._dynamo.utils import counters

    from attnzoo.tasks.compiling import apply_compile
    from attnzoo.tasks.runner import StrictRunner
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root
        cfg[key].batch_size = 4
    cfg.train_cfg.max_epochs = epochs
    cfg.model.mixup = dict(mixup_alpha=0.8, cutmix_alpha=1.0)
    if target == 'mmengine':
        cfg.compile = dict(backend='eager', dynamic=False)
    else:
        apply_compile(cfg, 'default')
        cfg.custom_hooks[-1]['backend'] = 'eager'
    torch._dynamo.reset()
    counters.clear()
    recompiles = _RecompileCounter()
    logging.getLogger(RECOMPILES_LOGGER).addHandler(recompiles)
    try:
        StrictRunner.from_cfg(cfg).train()
    finally:
        logging.getLogger(RECOMPILES_LOGGER).removeHandler(recompiles)
    breaks = Counter({reason.splitlines()[0]: n for reason, n in counters['graph_break'].items()})
    return dict(graphs=counters['stats']['unique_graphs'], graph_breaks=dict(breaks), recompiles=recompiles.count)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iters-per-epoch', type=int, default=6, help='train iterations per epoch (batch 4)')
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--out', help='also write the report here')
    args = p.parse_args(argv)
    import attnzoo  # noqa: F401
    import attnzoo.tasks  # noqa: F401
    torch._logging.set_logs(recompiles=True)
    torch.set_num_threads(1)
    lines = [f'digits DiNAT, mixup/cutmix, batch 4, {args.iters_per_epoch} iterations x {args.epochs} epochs + val, '
             f'backend=eager, torch {torch.__version__}']
    with tempfile.TemporaryDirectory() as tmp:
        root = osp.join(tmp, 'inet')
        write_folder(root, args.iters_per_epoch * 4 // 3 + 1)
        for target in ('mmengine', 'network'):
            result = count(target, root, osp.join(tmp, target), args.epochs)
            lines.append(f"{target}: {result['graphs']} graphs, {result['recompiles']} recompiles, graph breaks "
                         f"{sum(result['graph_breaks'].values())}: {result['graph_breaks']}")
    report = '\n'.join(lines) + '\n'
    if args.out:
        Path(args.out).write_text(report)
    sys.stdout.write(report)


if __name__ == '__main__':
    main()
