"""Speed of the task models: Mask R-CNN (detection) and DLGSANet (super-resolution), side by side.

Detection: torchvision Mask R-CNN + FPN on each backbone through ``attnzoo.tasks.detection.build_detector`` (the
code ``tools/train.py`` runs), random weights, synthetic COCO-sized images (800 x 1216 after torchvision's resize)
with random boxes and box masks; train step (forward, backward, AdamW step) and inference img/s::

    python benchmarks/task_models.py detection --backbones dinat_tiny swin_tiny_patch4_window7_224 --device cuda

Super-resolution: one low-resolution image (default 320 x 180, the issue's size) through a DLGSANet in eval mode
(its TLC global attention included), latency::

    python benchmarks/task_models.py sr --models dlgsanet_tiny_x4 --device cuda

Times are medians over ``--steps`` iterations after ``--warmup`` (CUDA events on the GPU); peak memory is the CUDA
allocator's peak (CPU: null). ``--json`` writes the rows with the machine name.
"""
import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

import attnzoo  # noqa: E402,F401
from attnzoo.utils.machine import machine_name  # noqa: E402
from attnzoo.utils.timing import median_ms  # noqa: E402

AMP = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# timm's Swin needs strict_img_size=False to take detection-sized inputs (as configs/detection/*swin*.py)
_BACKBONE_KWARGS = {'swin': dict(strict_img_size=False)}
# the detection presets of the families (DiNAT dilations, BiFormer regions + padding)
_DENSE_PRESET = ('nat', 'dinat', 'biformer')


def _autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=AMP[amp]) if AMP[amp] else contextlib.nullcontext()


def _peak_mb(device: torch.device) -> float:
    return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _synthetic_targets(batch: int, height: int, width: int, num_classes: int, boxes_per_image: int,
                       device: torch.device, generator: torch.Generator):
    """Images ``[3, H, W]`` in 0-1 and torchvision targets (xyxy boxes, labels 1..C, box masks ``[N, H, W]``)."""
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=generator).to(device))
        xy = torch.rand(boxes_per_image, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.1 + 0.2 * torch.rand(boxes_per_image, 2, generator=generator)) * torch.tensor([width, height])
        boxes = torch.cat([xy, xy + wh], 1).round()
        masks = torch.zeros(boxes_per_image, height, width, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            m[y0:y1, x0:x1] = 1
        labels = torch.randint(1, num_classes + 1, (boxes_per_image,), generator=generator)
        targets.append(dict(boxes=boxes.to(device), labels=labels.to(device), masks=masks.to(device)))
    return images, targets


def _bench_detector(name: str, args, device: torch.device) -> dict:
    """Train-step and inference speed of Mask R-CNN + FPN on backbone ``name`` (one row)."""
    from attnzoo.tasks.detection import build_detector
    torch.manual_seed(0)
    extra = next((kw for key, kw in _BACKBONE_KWARGS.items() if name.startswith(key)), {})
    preset = 'coco' if name.split('_')[0] in _DENSE_PRESET else None
    backbone = dict(model_name=name, dense_preset=preset, model_kwargs=dict(drop_path_rate=0.2, **extra))
    model = build_detector('mask_rcnn', backbone, num_classes=80, min_size=800, max_size=1333).to(device)
    gen = torch.Generator().manual_seed(0)
    images, targets = _synthetic_targets(args.batch_size, args.height, args.width, 80, 8, device, gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')

    def train_step():
        with _autocast(device, args.amp):
            loss = sum(model(images, targets).values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def infer_step():
        with torch.no_grad(), _autocast(device, args.amp):
            model(images)

    model.train()
    _reset_peak(device)
    train_ms = median_ms(train_step, args.steps, args.warmup, device)
    train_peak = _peak_mb(device)
    model.eval()
    _reset_peak(device)
    infer_ms = median_ms(infer_step, args.steps, args.warmup, device)
    return dict(backbone=name, batch_size=args.batch_size, image=f'{args.height}x{args.width}',
                train_img_per_s=round(args.batch_size * 1e3 / train_ms, 2), train_ms=round(train_ms, 2),
                train_peak_mem_mb=train_peak, inference_img_per_s=round(args.batch_size * 1e3 / infer_ms, 2),
                inference_ms=round(infer_ms, 2), inference_peak_mem_mb=_peak_mb(device))


def bench_detection(args) -> list:
    device = torch.device(args.device)
    rows = []
    for name in args.backbones:
        rows.append(_bench_detector(name, args, device))
        print(json.dumps(rows[-1]), flush=True)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return rows


def bench_sr(args) -> list:
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name).to(device).eval()
        x = torch.rand(args.batch_size, 3, args.height, args.width, device=device)

        def step():
            with torch.no_grad(), _autocast(device, args.amp):
                model(x)

        _reset_peak(device)
        ms = median_ms(step, args.steps, args.warmup, device)
        scale = model.pretrained_cfg.get('scale', None)
        row = dict(model=name, lr_input=f'{args.width}x{args.height}', scale=scale, batch_size=args.batch_size,
                   amp=args.amp, ms_per_image=round(ms / args.batch_size, 2), peak_mem_mb=_peak_mb(device))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='task', required=True)
    det = sub.add_parser('detection', help='Mask R-CNN + FPN train / inference img/s per backbone')
    det.add_argument('--backbones', nargs='+', default=['dinat_tiny', 'swin_tiny_patch4_window7_224'])
    det.add_argument('--batch-size', type=int, default=2, help='images per step (the configs use 2 per GPU)')
    det.add_argument('--height', type=int, default=800)
    det.add_argument('--width', type=int, default=1216)
    det.add_argument('--amp', default='fp16', choices=list(AMP), help='the detection configs train in fp16')
    sr = sub.add_parser('sr', help='DLGSANet latency on one low-resolution image')
    sr.add_argument('--models', nargs='+', default=['dlgsanet_tiny_x4'])
    sr.add_argument('--batch-size', type=int, default=1)
    sr.add_argument('--height', type=int, default=180)
    sr.add_argument('--width', type=int, default=320)
    sr.add_argument('--amp', default='none', choices=list(AMP))
    for q in (det, sr):
        q.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
        q.add_argument('--steps', type=int, default=10)
        q.add_argument('--warmup', type=int, default=3)
        q.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
        q.add_argument('--json', type=Path)
    args = p.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_detection(args) if args.task == 'detection' else bench_sr(args)
    report = dict(machine=machine_name(args.device, args.threads), torch=torch.__version__, task=args.task,
                  command=' '.join(sys.argv), results=rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
