"""Two-GPU training evidence for ``tools/train.py`` (DDP through torchrun), written to ``distributed.md``.

On a machine with >= 2 GPUs (no network needed), three parts (each fits one 10-minute device call)::

    python benchmarks/distributed.py --part speed --out benchmarks/results/h200x2_distributed_speed.json
    python benchmarks/distributed.py --part agreement --reference benchmarks/results/h200x2_distributed_speed.json \
        --out benchmarks/results/h200x2_distributed_agreement.json
    python benchmarks/distributed.py --part eval --train-per-class 320 --epochs 6 \
        --data-root /tmp/attnzoo_textures_small --out benchmarks/results/h200x2_distributed_eval.json

Each writes (deterministically) an ImageNet-layout folder of class-dependent textures (JPEG gratings: each
class its own orientation and frequency, random phase, colour and noise) and train the config (default
``configs/classification/dinat_tiny.py``, its real recipe, bf16) for the same number of epochs:

* ``speed``: 1 GPU and 2 GPUs (torchrun) at the config's per-GPU batch: img/s per GPU from the logged
  iteration times after the first epochs, the scaling efficiency, data time, loss curves, the files written;
* ``agreement``: 2 GPUs at half that batch, i.e. the 1-GPU run's global batch, LR and number of steps, whose
  loss curve (mean per window of iterations) is compared with the speed part's 1-GPU curve, next to the
  difference between that 1-GPU run and a 1-GPU run with another seed (the noise); then ``--resume`` for
  more epochs, and ``tools/test.py`` of the 2-GPU checkpoint in one process against the top-1 the 2 ranks
  gathered;
* ``eval``: a 2-GPU run that learns within a few epochs (a ``--classes``-way head instead of 1000 classes, a
  1-epoch warm-up, base LR 1e-3 after linear scaling), then ``tools/test.py`` of its checkpoint in one process: the
  top-1 the 2 ranks gathered against the 1-process top-1 (the real recipe's 20 warm-up epochs leave 3 epochs at
  chance, where equal top-1s prove little). Run with ``--train-per-class 320 --epochs 6``.

The default dataset (12800 training images) gives 100 iterations per epoch on 1 GPU and 50 on 2 at batch
128, so the data loader's start-up at each epoch (its workers' first batches) weighs little in the median
iteration time. NVLink multicast stays off in every process (``NCCL_NVLS_ENABLE=0``,
``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, ``NVSHMEM_DISABLE_NVLS=1``).
"""
import argparse
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
NO_MULTICAST = {'NCCL_NVLS_ENABLE': '0', 'TORCH_SYMM_MEM_DISABLE_MULTICAST': '1', 'NVSHMEM_DISABLE_NVLS': '1'}


def _texture(label: int, num_classes: int, seed: int, size: int) -> np.ndarray:
    """A ``size x size x 3`` uint8 grating whose orientation and frequency encode ``label``."""
    rng = np.random.default_rng(seed)
    angle = math.pi * label / num_classes + rng.normal(0, 0.05)
    freq = 2 * math.pi * (3 + 2 * (label % 4)) / size
    y, x = np.mgrid[:size, :size]
    wave = np.sin(freq * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
    colour = rng.uniform(0.3, 1.0, 3)
    img = 127.5 + 100 * wave[..., None] * colour + rng.normal(0, 20, (size, size, 3))
    return img.clip(0, 255).astype(np.uint8)


def _write(task):
    from PIL import Image
    path, label, num_classes, seed, size = task
    Image.fromarray(_texture(label, num_classes, seed, size)).save(path, quality=90)


def make_dataset(root: Path, num_classes: int, train_per_class: int, val_per_class: int, size: int = 160) -> None:
    """ImageNet layout ``root/{train,val}/<class>/*.JPEG`` (skipped when ``root/train`` exists)."""
    if (root / 'train').is_dir():
        return
    tasks = []
    for split, count, offset in (('train', train_per_class, 0), ('val', val_per_class, 10 ** 6)):
        for c in range(num_classes):
            folder = root / split / f'n{c:08d}'
            folder.mkdir(parents=True, exist_ok=True)
            tasks += [(folder / f'{i}.JPEG', c, num_classes, offset + c * 10 ** 5 + i, size) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write, tasks, chunksize=64))


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


# A run whose processes are still alive this long after their final summary line is stalled at exit (seen on
# the H200 machines: about 140 s): every process of it then gets SIGABRT, which makes Python's faulthandler write
# each thread's stack into the log, and the run counts as finished.
EXIT_GRACE_S = 10.0
EXIT_STALLS: dict = {}


def _run(args, log: Path, gpus: str) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONFAULTHANDLER='1', CUDA_VISIBLE_DEVICES=gpus, **NO_MULTICAST)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, finished_at = [], []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if 'Final: ' in line and not finished_at:
                finished_at.append(time.time())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        if finished_at and time.time() - finished_at[0] > EXIT_GRACE_S:
            EXIT_STALLS[log.name] = True
            os.killpg(proc.pid, signal.SIGABRT)
            proc.wait()
            break
        time.sleep(0.5)
    reader.join(timeout=30)
    out = ''.join(lines)
    log.write_text(out)
    stalled = ' (stalled at exit: stacks in the log)' if EXIT_STALLS.get(log.name) else ''
    print(f'{log.name}: exit {proc.returncode} in {time.time() - t0:.0f} s{stalled}', flush=True)
    if proc.returncode != 0 and not finished_at:
        raise SystemExit(out[-5000:])
    return out


def _train_log(out: str, skip_epochs: int, window: int):
    """Loss curve (mean logged loss per ``window`` iterations, keyed by the window's last iteration), and the
    median logged iteration and data times after ``skip_epochs``."""
    losses, times, data_times = {}, [], []
    for line in out.splitlines():
        m = re.search(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\].*?time: ([\d.]+)\s+data_time: ([\d.]+)'
                      r'.*?loss: ([\d.]+)', line)
        if m:
            epoch, it, per_epoch = int(m.group(1)), int(m.group(2)), int(m.group(3))
            step = (epoch - 1) * per_epoch + it
            losses.setdefault(-(-step // window) * window, []).append(float(m.group(6)))
            if epoch > skip_epochs:
                times.append(float(m.group(4)))
                data_times.append(float(m.group(5)))
    return ({k: round(statistics.mean(v), 4) for k, v in sorted(losses.items())},
            statistics.median(times), statistics.median(data_times))


def _final_top1(out: str) -> float:
    return float(re.findall(r'Final: top1=([\d.]+)', out)[-1])


def _files(work_dir: Path):
    return sorted(str(p.relative_to(work_dir)) for p in work_dir.rglob('*') if p.is_file())


def _loss_agreement(ref: dict, got: dict) -> dict:
    """Relative difference of two iteration -> mean-loss curves, per common window and its maximum."""
    diffs = {k: round(abs(got[k] - ref[k]) / ref[k], 4) for k in ref if k in got}
    return dict(max_rel_diff=max(diffs.values()), mean_rel_diff=round(statistics.mean(diffs.values()), 4),
                per_window=diffs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--part', choices=['speed', 'agreement', 'eval'], required=True,
                   help="speed: 1 GPU and 2 GPUs at the config's per-GPU batch; agreement: 2 GPUs at half that batch "
                        "(the 1-GPU run's global batch, LR and step count), then --resume and a 1-process test; "
                        "eval: a 2-GPU run that learns, its gathered top-1 against a 1-process test")
    p.add_argument('--reference', type=Path, help='agreement: the speed part\'s JSON (its 1-GPU loss curve)')
    p.add_argument('--config', default='configs/classification/dinat_tiny.py')
    p.add_argument('--data-root', type=Path, default=Path('/tmp/attnzoo_textures'))
    p.add_argument('--work-root', type=Path, default=Path('/tmp/attnzoo_distributed'))
    p.add_argument('--classes', type=int, default=10)
    p.add_argument('--train-per-class', type=int, default=1280)
    p.add_argument('--val-per-class', type=int, default=50)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--resume-epochs', type=int, default=1, help='epochs the resumed 2-GPU run adds')
    p.add_argument('--loss-window', type=int, default=50, help='iterations per point of the loss curves')
    p.add_argument('--batch-size', type=int, default=None, help="per GPU (default: the config's)")
    p.add_argument('--workers', type=int, default=14, help='data-loader workers per GPU')
    p.add_argument('--skip-epochs', type=int, default=1, help='epochs left out of the speed (warm-up)')
    p.add_argument('--logs', type=Path, help='folder for the raw logs')
    p.add_argument('--out', type=Path, help='JSON summary')
    args = p.parse_args(argv)
    if args.part == 'agreement' and args.reference is None:
        p.error('--part agreement needs --reference (the JSON of --part speed)')

    t0 = time.time()
    make_dataset(args.data_root, args.classes, args.train_per_class, args.val_per_class)
    print(f'dataset: {time.time() - t0:.0f} s', flush=True)
    logs = args.logs or args.work_root / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    batch = args.batch_size or Config.fromfile(REPO / args.config).train_dataloader.batch_size
    options = ['train_cfg.val_interval=%d' % args.epochs, 'default_hooks.checkpoint.interval=%d' % args.epochs,
               'default_hooks.logger.interval=5', f'train_dataloader.num_workers={args.workers}',
               f'val_dataloader.num_workers={args.workers}']
    train = ['tools/train.py', args.config, '--data-root', args.data_root, '--amp', 'bf16']
    epochs = f'train_cfg.max_epochs={args.epochs}'

    def two_gpus(work_dir, log, per_gpu, *extra):
        return _run(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
                     '--master_port', _free_port(), *train, '--launcher', 'pytorch', '--work-dir', work_dir, *extra,
                     '--cfg-options', *options, f'train_dataloader.batch_size={per_gpu}'], logs / log, '0,1')

    summary = dict(part=args.part, config=args.config, epochs=args.epochs,
                   dataset=dict(classes=args.classes, train=args.classes * args.train_per_class,
                                val=args.classes * args.val_per_class, workers_per_gpu=args.workers))
    if args.part == 'speed':
        wd1, wd2 = args.work_root / 'gpu1', args.work_root / 'gpu2'
        out1 = _run([*train, '--work-dir', wd1, '--cfg-options', epochs, *options,
                     f'train_dataloader.batch_size={batch}'], logs / 'train_1gpu.log', '0')
        out2 = two_gpus(wd2, 'train_2gpu.log', batch, '--cfg-options', epochs)
        (loss1, t1, d1), (loss2, t2, d2) = (_train_log(out, args.skip_epochs, args.loss_window)
                                            for out in (out1, out2))
        summary.update(
            batch_per_gpu=batch, iter_time_s={'1gpu': t1, '2gpu': t2}, data_time_s={'1gpu': d1, '2gpu': d2},
            img_per_s_per_gpu={'1gpu': round(batch / t1, 1), '2gpu': round(batch / t2, 1)},
            scaling_efficiency=round(t1 / t2, 3), loss_curve={'1gpu': loss1, '2gpu': loss2},
            loss_window=args.loss_window,
            top1={'1gpu': _final_top1(out1), '2gpu': _final_top1(out2)},
            files_written={'1gpu': _files(wd1), '2gpu': _files(wd2)},
            distributed_line=re.search(r'Distributed training: \w+', out2).group(0))
    elif args.part == 'eval':
        wd = args.work_root / 'gpu2_eval'
        learn = [f'model.num_classes={args.classes}', 'param_scheduler.0.end=1',
                 f'optim_wrapper.optimizer.lr={1e-3 * 1024 / batch}']  # auto_scale_lr: x (2 * batch/2) / 1024
        out = two_gpus(wd, 'eval_train_2gpu.log', batch // 2, '--cfg-options', epochs, *learn)
        test_out = _run(['tools/test.py', args.config, wd / f'epoch_{args.epochs}.pth', '--data-root', args.data_root,
                         '--work-dir', args.work_root / 'test_eval', '--cfg-options',
                         f'test_dataloader.num_workers={args.workers}', f'model.num_classes={args.classes}'],
                        logs / 'eval_test_1process.log', '0')
        summary.update(batch_per_gpu=batch // 2, overrides=learn,
                       final={'2gpu_2ranks': re.findall(r'Final: (.*)', out)[-1],
                              'same_checkpoint_1process': re.findall(r'Final: (.*)', test_out)[-1]},
                       top1={'2gpu_2ranks': _final_top1(out), 'same_checkpoint_1process': _final_top1(test_out)})
    else:
        reference = json.loads(args.reference.read_text())
        wd = args.work_root / 'gpu2_half'
        out = two_gpus(wd, 'train_2gpu_half_batch.log', reference['batch_per_gpu'] // 2, '--cfg-options', epochs)
        files = _files(wd)
        total = args.epochs + args.resume_epochs
        resumed_out = two_gpus(wd, 'resume_2gpu.log', reference['batch_per_gpu'] // 2, '--resume',
                               '--cfg-options', f'train_cfg.max_epochs={total}')
        test_out = _run(['tools/test.py', args.config, wd / f'epoch_{args.epochs}.pth', '--data-root',
                         args.data_root, '--work-dir', args.work_root / 'test',
                         '--cfg-options', f'test_dataloader.num_workers={args.workers}'], logs / 'test_1process.log',
                        '0')
        seed_out = _run([*train, '--work-dir', args.work_root / 'gpu1_seed', '--cfg-options', epochs, *options,
                         f'train_dataloader.batch_size={reference["batch_per_gpu"]}', 'randomness.seed=1234'],
                        logs / 'train_1gpu_other_seed.log', '0')
        window = reference['loss_window']
        loss, _, _ = _train_log(out, 0, window)
        seed_loss, _, _ = _train_log(seed_out, 0, window)
        ref_loss = {int(k): v for k, v in reference['loss_curve']['1gpu'].items()}
        resumed = re.search(r'resumed epoch: (\d+), iter: (\d+)', resumed_out)
        first = re.search(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/', resumed_out)
        summary.update(
            batch_per_gpu=reference['batch_per_gpu'] // 2, loss_window=window,
            loss_curve={'2gpu_half_batch': loss, '1gpu_other_seed': seed_loss},
            loss_vs_1gpu=_loss_agreement(ref_loss, loss), seed_noise_1gpu=_loss_agreement(ref_loss, seed_loss),
            files_written=files,
            top1={'2gpu_2ranks': _final_top1(out), 'same_checkpoint_1process': _final_top1(test_out)},
            resume=dict(resumed_from=resumed.groups() if resumed else None,
                        first_logged=first.groups() if first else None, top1_after=_final_top1(resumed_out),
                        files_after=_files(wd)))
    summary['exit_stalls'] = sorted(EXIT_STALLS)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == '__main__':
    main()
