"""End-to-end training speed: ``tools/train.py`` with a model's own ImageNet config against timm's ``train.py``
with the same recipe, on one synthetic ImageNet-layout JPEG folder (issue 21, "End to end")::

    python benchmarks/train_e2e.py --runs swin_tiny_patch4_window7_224=dinat_tiny dinat_tiny \\
        --timm-train ~/pytorch-image-models/train.py --amp bf16 --out benchmarks/results/h200_train_e2e

A run is ``CONFIG`` (``configs/classification/CONFIG.py``, or a path) or ``MODEL=CONFIG``: that config's recipe
with its model (and its datasets' ``model_name``) replaced by the timm model ``MODEL``, so Swin-T is trained with
DiNAT-T's recipe. The steps:

1. ``--root`` gets ``train/<class>/*.JPEG`` (``--images``, ``--size`` 500x375 by default, ``--classes`` <= 1000
   classes, a random texture per image) and ``val/`` (``--val-per-class``), unless it already holds both.
2. ``tools/train.py CONFIG --data-root ROOT`` for ``--epochs`` epochs (``--amp``, ``--compile``, ``--batch-size``,
   ``--workers`` forwarded; the config's own values otherwise), logging every ``--log-interval`` iterations with a
   log window of the same length, so the logged times average every iteration.
3. timm's ``train.py`` on the same folder, with the config's recipe as its flags (:func:`timm_recipe_args`:
   optimizer, clipping, mixup/cutmix, smoothing, RandAugment, random erasing, crop scale/ratio, drop path, data
   config, workers). timm's wheel has no ``train.py`` (and no console command for it): pass ``--timm-train`` with
   the ``train.py`` of a pytorch-image-models checkout of the installed timm version (timm >= 0.9 for ``--data-dir``,
   ``--amp-dtype`` and ``--torchcompile``; the flags were checked on the CPU against the ``train.py`` of
   pytorch-image-models commit aa4b5850, timm 1.0.29.dev0, with ``--timm-extra="--device cpu --no-prefetcher"``).
   It runs through a launcher that imports attnzoo first, so the zoo's models are timm models there. Without
   ``--timm-train`` only step 2 runs.
4. Both logs are parsed: mean time per iteration and data-loading time over the epochs after ``--warmup-epochs``
   (``tools/train.py``: the logged ``time`` / ``data_time`` windows; timm: each epoch's running averages of its
   last ``Train:`` line, weighted by the epoch's iterations); ``OUT.json`` and ``OUT.md`` get one row per run
   and tool, with img/s and the ratio to the first run through the same tool.
"""
import argparse
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'tools' / 'train.py'
CONFIGS = REPO / 'configs' / 'classification'
MAX_CLASSES = 1000
# the launcher of timm's train.py: attnzoo first (registers the zoo's models with timm), then the script as __main__
TIMM_LAUNCHER = ('import runpy, sys; import attnzoo; script = sys.argv[1]; sys.argv = sys.argv[1:]; '
                 "runpy.run_path(script, run_name='__main__')")
MM_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\].*?\stime: ([\d.]+)\s+data_time: ([\d.]+)')
TIMM_LINE = re.compile(r'Train: (\d+) \[\s*(\d+)/(\d+) .*?Time: [\d.]+s,.*?\(([\d.]+)s,.*?Data: [\d.]+ \(([\d.]+)\)')


# --------------------------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------------------------
def texture(rng: np.random.RandomState, size) -> np.ndarray:
    """A random texture ``uint8 [H, W, 3]`` for ``size=(W, H)``: smooth colour blobs (a coarse random grid
    upsampled bilinearly) plus pixel noise, so JPEG sizes and decode times are those of photos, not of noise."""
    from PIL import Image
    w, h = size
    coarse = rng.randint(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    noise = rng.randint(-24, 25, (h, w, 3), dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def write_folder(root: str, images: int, classes: int, val_per_class: int = 1, size=(500, 375),
                 seed: int = 0) -> str:
    """Write ``root/train/<class>/<i>.JPEG`` (``images`` spread over ``classes`` folders ``n00000000``, ...) and
    ``root/val/<class>/`` (``val_per_class`` each), ``size=(W, H)`` px; written under ``<root>.tmp`` and renamed,
    so a half-written folder is never taken for a complete one. A ``root`` that exists is left as it is.

    Raises:
        ValueError: ``classes`` not in [1, 1000], ``images`` < ``classes``, ``val_per_class`` < 1, a size < 8 px.
    """
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f'classes must be in [1, {MAX_CLASSES}], got {classes}')
    if images < classes:
        raise ValueError(f'images must be >= classes ({classes}) so every class has one, got {images}')
    if val_per_class < 1:
        raise ValueError(f'val_per_class must be >= 1, got {val_per_class}')
    if min(size) < 8:
        raise ValueError(f'size must be at least 8x8 px, got {size}')
    if osp.isdir(osp.join(root, 'train')) and osp.isdir(osp.join(root, 'val')):
        return root
    from PIL import Image
    tmp = f'{root}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.RandomState(seed)
    counts = {'train': [images // classes + (c < images % classes) for c in range(classes)],
              'val': [val_per_class] * classes}
    for split, per_class in counts.items():
        for c, n in enumerate(per_class):
            folder = osp.join(tmp, split, f'n{c:08d}')
            os.makedirs(folder)
            for i in range(n):
                Image.fromarray(texture(rng, size)).save(osp.join(folder, f'{i}.JPEG'), quality=90)
    os.replace(tmp, root)
    return root


# --------------------------------------------------------------------------------------------------------------
# the two commands
# --------------------------------------------------------------------------------------------------------------
def config_path(config: str) -> str:
    """``CONFIG`` as a file: a path, or a name under ``configs/classification``."""
    path = config if config.endswith('.py') else str(CONFIGS / f'{config}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {config!r}: no file {path}')
    return path


def parse_run(run: str):
    """``'MODEL=CONFIG'`` or ``'CONFIG'`` -> ``(label, config file, model name or None)``."""
    model, _, config = run.rpartition('=')
    return (model or osp.splitext(osp.basename(config))[0]), config_path(config), (model or None)


def attnzoo_command(config: str, model: Optional[str], args, work_dir: str) -> List[str]:
    """The ``tools/train.py`` command line of one run."""
    options = [f'model.num_classes={args.classes}', f'train_cfg.max_epochs={args.epochs}',
               f'default_hooks.logger.interval={args.log_interval}', f'log_processor.window_size={args.log_interval}']
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    if model:
        options += [f'model.model_name={model}'] + [f'{key}.dataset.model_name={model}' for key in loaders]
    if args.batch_size:
        options += [f'{key}.batch_size={args.batch_size}' for key in loaders]
    if args.workers is not None:
        options += [f'{key}.num_workers={args.workers}' for key in loaders]
        # persistent workers need workers (the ImageNet configs keep theirs alive across epochs)
        options += [f'{key}.persistent_workers={args.workers > 0}' for key in loaders]
    command = [sys.executable, str(TRAIN), config, '--work-dir', work_dir, '--data-root', args.root]
    if args.amp:
        command += ['--amp', args.amp]
    if args.compile:
        command += ['--compile', args.compile]
    return command + ['--cfg-options', *options]


def _pair(flag: str, values) -> List[str]:
    return [flag, *(str(v) for v in values)]


def timm_recipe_args(cfg) -> List[str]:
    """timm ``train.py`` flags for the recipe of ``cfg`` (an attnzoo classification ``Config``): optimizer,
    clipping, mixup/cutmix and smoothing, drop path and the other model kwargs, the training transform and the
    data config, workers."""
    flags = []
    model = cfg.model
    kwargs = dict(model.get('model_kwargs') or {})
    if 'drop_path_rate' in kwargs:
        flags += ['--drop-path', str(kwargs.pop('drop_path_rate'))]
    if kwargs:
        flags += ['--model-kwargs', *(f'{k}={v!r}' for k, v in kwargs.items())]
    mixup = model.get('mixup') or {}
    for key, flag in (('mixup_alpha', '--mixup'), ('cutmix_alpha', '--cutmix'), ('prob', '--mixup-prob'),
                      ('switch_prob', '--mixup-switch-prob'), ('mode', '--mixup-mode')):
        if key in mixup:
            flags += [flag, str(mixup[key])]
    flags += ['--smoothing', str(model.get('smoothing', 0.1))]

    optim = cfg.optim_wrapper
    optimizer = dict(optim.optimizer)
    flags += ['--opt', str(optimizer.get('type') or optimizer.get('opt')).lower()]
    for key, flag in (('lr', '--lr'), ('weight_decay', '--weight-decay'), ('eps', '--opt-eps'),
                      ('momentum', '--momentum')):
        if key in optimizer:
            flags += [flag, str(optimizer[key])]
    if 'betas' in optimizer:
        flags += _pair('--opt-betas', optimizer['betas'])
    if (optim.get('paramwise_cfg') or {}).get('layer_decay') is not None:
        flags += ['--layer-decay', str(optim.paramwise_cfg.layer_decay)]
    if optim.get('clip_grad'):
        flags += ['--clip-grad', str(optim.clip_grad.max_norm), '--clip-mode', 'norm']

    loader = cfg.train_dataloader
    transform = dict(loader.dataset.get('transform') or {})
    for key, flag in (('scale', '--scale'), ('ratio', '--ratio')):
        if key in transform:
            flags += _pair(flag, transform[key])
    for key, flag in (('hflip', '--hflip'), ('auto_augment', '--aa'), ('interpolation', '--train-interpolation'),
                      ('re_prob', '--reprob'), ('re_mode', '--remode'), ('re_count', '--recount')):
        if transform.get(key) is not None:
            flags += [flag, str(transform[key])]
    flags += ['--color-jitter', str(transform.get('color_jitter') or 0.0)]
    data_config = dict(loader.dataset.get('data_config') or {})
    for key, flag in (('input_size', '--input-size'), ('mean', '--mean'), ('std', '--std')):
        if key in data_config:
            flags += _pair(flag, data_config[key])
    for key, flag in (('crop_pct', '--crop-pct'), ('interpolation', '--interpolation')):
        if key in data_config:
            flags += [flag, str(data_config[key])]
    flags += ['-j', str(loader.get('num_workers', 0))]
    if loader.get('pin_memory'):
        flags.append('--pin-mem')
    return flags


def timm_command(config: str, model: Optional[str], args, out_dir: str) -> List[str]:
    """The timm ``train.py`` command line of one run (through :data:`TIMM_LAUNCHER`)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if args.workers is not None:
        cfg.train_dataloader.num_workers = args.workers
    batch = args.batch_size or cfg.train_dataloader.batch_size
    command = [sys.executable, '-c', TIMM_LAUNCHER, args.timm_train, '--data-dir', args.root, '--train-split',
               'train', '--val-split', 'val',
               '--model', model or cfg.model.model_name, '--num-classes', str(args.classes), '-b', str(batch),
               '--epochs', str(args.epochs), '--warmup-epochs', '0', '--cooldown-epochs', '0',
               '--log-interval', str(args.log_interval), '--output', out_dir, '--checkpoint-hist', '1',
               *timm_recipe_args(cfg)]
    if args.amp and args.amp != 'none':
        command += ['--amp', '--amp-dtype', 'bfloat16' if args.amp == 'bf16' else 'float16']
    if args.compile:
        command += ['--torchcompile'] + (['--torchcompile-mode', args.compile] if args.compile != 'default' else [])
    return command + shlex.split(args.timm_extra)


def batch_size(config: str, args) -> int:
    from mmengine.config import Config
    return args.batch_size or Config.fromfile(config).train_dataloader.batch_size


# --------------------------------------------------------------------------------------------------------------
# the logs
# --------------------------------------------------------------------------------------------------------------
def parse_attnzoo_log(text: str, warmup_epochs: int) -> Dict[str, float]:
    """Mean ``time`` and ``data_time`` (s per iteration) of the ``Epoch(train)`` log lines of the epochs after
    ``warmup_epochs``, and how many lines they are."""
    rows = [(float(m.group(4)), float(m.group(5))) for m in MM_LINE.finditer(text) if int(m.group(1)) > warmup_epochs]
    if not rows:
        raise ValueError(f'no Epoch(train) log line after epoch {warmup_epochs} in the tools/train.py log')
    times, data = zip(*rows)
    return dict(s_per_iter=float(np.mean(times)), data_s=float(np.mean(data)), samples=len(rows))


def parse_timm_log(text: str, warmup_epochs: int) -> Dict[str, float]:
    """Per-iteration time and data time of timm's ``train.py`` over the epochs after ``warmup_epochs`` (timm counts
    epochs from 0): each epoch's running averages on its last ``Train:`` line, weighted by its iterations."""
    last = {}
    for m in TIMM_LINE.finditer(text):
        epoch = int(m.group(1))
        if epoch >= warmup_epochs:
            last[epoch] = (int(m.group(2)) + 1, float(m.group(4)), float(m.group(5)))
    if not last:
        raise ValueError(f'no Train: log line of epoch {warmup_epochs} (0-based) or later in the timm log')
    iters, times, data = (np.array(column, dtype=float) for column in zip(*last.values()))
    return dict(s_per_iter=float(np.average(times, weights=iters)), data_s=float(np.average(data, weights=iters)),
                samples=int(iters.sum()))


# --------------------------------------------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------------------------------------------
def run_logged(command: List[str], log_file: str, timeout: float) -> str:
    """Run ``command`` with stdout and stderr into ``log_file``; its text. Raises ``RuntimeError`` (with the log's
    tail) when it fails."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(log_file, 'w') as f:
        proc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    text = Path(log_file).read_text()
    if proc.returncode != 0:
        raise RuntimeError(f'exit {proc.returncode}: {" ".join(command)}\n{text[-4000:]}')
    return text


def markdown(rows: List[dict], args) -> str:
    """The table of ``rows`` (one per run and tool)."""
    lines = [f'{args.images} JPEGs {args.size[0]}x{args.size[1]}, {args.classes} classes, {args.epochs} epochs '
             f'(measured after {args.warmup_epochs}), amp={args.amp or "config"}, compile={args.compile or "no"}',
             '', '| run | tool | batch | s/iter | img/s | data s/iter | × first run, same tool |',
             '|---|---|---|---|---|---|---|']
    first = {}
    for row in rows:
        if row.get('s_per_iter') is None:
            lines.append(f"| {row['run']} | {row['tool']} | {row['batch']} | {row['note']} | | | |")
            continue
        ref = first.setdefault(row['tool'], row['img_per_s'])
        lines.append(f"| {row['run']} | {row['tool']} | {row['batch']} | {row['s_per_iter']:.4f} | "
                     f"{row['img_per_s']:.1f} | {row['data_s']:.4f} | {row['img_per_s'] / ref:.2f} |")
    return '\n'.join(lines) + '\n'


def measure(label: str, config: str, model: Optional[str], args) -> List[dict]:
    """Both tools on one run: a row each (timm's says why it did not run when ``--timm-train`` is missing)."""
    batch = batch_size(config, args)
    work = osp.join(args.work_dir, label)
    os.makedirs(work, exist_ok=True)
    log = run_logged(attnzoo_command(config, model, args, osp.join(work, 'attnzoo')),
                     osp.join(work, 'attnzoo.log'), args.timeout)
    rows = [dict(run=label, tool='tools/train.py', batch=batch, **parse_attnzoo_log(log, args.warmup_epochs))]
    if args.timm_train:
        log = run_logged(timm_command(config, model, args, osp.join(work, 'timm')), osp.join(work, 'timm.log'),
                         args.timeout)
        rows.append(dict(run=label, tool='timm train.py', batch=batch, **parse_timm_log(log, args.warmup_epochs)))
    else:
        rows.append(dict(run=label, tool='timm train.py', batch=batch, s_per_iter=None,
                         note='not run: pass --timm-train PATH (train.py of a pytorch-image-models checkout)'))
    for row in rows:
        if row['s_per_iter'] is not None:
            row['img_per_s'] = batch / row['s_per_iter']
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--runs', nargs='+', default=['swin_tiny_patch4_window7_224=dinat_tiny', 'dinat_tiny'],
                   help='CONFIG or MODEL=CONFIG (CONFIG: a name under configs/classification or a .py path)')
    p.add_argument('--root', default='data/synthetic_imagenet', help='the synthetic folder (written if missing)')
    p.add_argument('--images', type=int, default=12800, help='training images')
    p.add_argument('--classes', type=int, default=MAX_CLASSES, help=f'classes, 1..{MAX_CLASSES}')
    p.add_argument('--val-per-class', type=int, default=1)
    p.add_argument('--size', type=int, nargs=2, default=(500, 375), metavar=('W', 'H'))
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--warmup-epochs', type=int, default=1, help='epochs left out of the means')
    p.add_argument('--log-interval', type=int, default=10)
    p.add_argument('--batch-size', type=int, help="per-GPU batch (default: the config's)")
    p.add_argument('--workers', type=int, help="loader workers (default: the config's)")
    p.add_argument('--amp', choices=['fp16', 'bf16', 'none'], help="mixed precision (default: the config's)")
    p.add_argument('--compile', choices=['default', 'max-autotune-no-cudagraphs', 'reduce-overhead'],
                   help='tools/train.py --compile MODE and timm --torchcompile [--torchcompile-mode MODE]')
    p.add_argument('--timm-train', help="train.py of a pytorch-image-models checkout (not in timm's wheel)")
    p.add_argument('--timm-extra', default='', metavar='"FLAGS"',
                   help='more timm train.py flags, one string: --timm-extra="--device cpu --no-prefetcher"')
    p.add_argument('--work-dir', default='work_dirs/train_e2e')
    p.add_argument('--timeout', type=float, default=7200, help='seconds per training command')
    p.add_argument('--out', default='benchmarks/results/train_e2e', help='writes OUT.json and OUT.md')
    args = p.parse_args(argv)
    if args.epochs <= args.warmup_epochs:
        p.error(f'--epochs ({args.epochs}) must be larger than --warmup-epochs ({args.warmup_epochs})')
    if args.log_interval < 1:
        p.error(f'--log-interval must be >= 1, got {args.log_interval}')
    if args.timm_train and not osp.isfile(args.timm_train):
        p.error(f'--timm-train {args.timm_train}: no such file')
    return args


def main(argv=None):
    args = parse_args(argv)
    runs = [parse_run(run) for run in args.runs]
    write_folder(args.root, args.images, args.classes, args.val_per_class, tuple(args.size))
    rows = []
    for label, config, model in runs:
        rows += measure(label, config, model, args)
        print(f'{label}: done', flush=True)
    os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
    Path(f'{args.out}.json').write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    table = markdown(rows, args)
    Path(f'{args.out}.md').write_text(table)
    print(table)


if __name__ == '__main__':
    main()
