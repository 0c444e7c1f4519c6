"""Sparsifiner speed: top-k sparse attention vs dense attention, op-only and whole model, same run.

Attention only: DeiT-S layer shapes (6 heads x 64, 197 tokens, class row dense), given the top-k
indices: dense SDPA vs ``attnzoo.ops.topk_attention`` (the ``torch`` gather path, the official dense-masked
``reference`` and, on CUDA, ``auto``'s masked fused SDPA) at keep rates 1.0 / 0.5 / 0.25 (197 / 99 / 50 keys).
Whole model: timm ``deit_small_patch16_224`` vs ``sparsifiner_deit_small`` at keep 1.0 / 0.5 / 0.25
(keep 1.0 skips the predictor: dense SDPA; on CUDA also with the ``torch`` gather path), images/s, inference. Also the attention MACs per image.

    python benchmarks/sparse_ops.py --device cpu  --batch 16 --threads 1
    python benchmarks/sparse_ops.py --device cuda --batch 256 --dtype bfloat16

Writes JSON (``--out``) and prints a markdown table. Medians over interleaved repeats.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import attnzoo  # noqa: F401
from attnzoo.models.sparsifiner import predictor_macs
from attnzoo.ops import count_attention_macs, topk_attention, use_backend
from attnzoo.utils.machine import machine_name

RATES = (1.0, 0.5, 0.25)


def timeit(fn, device, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    if device == 'cuda':
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--dtype', default='float32')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--out', default=None)
    args = p.parse_args()
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
    dev, dtype, B = args.device, getattr(torch, args.dtype), args.batch
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = [torch.randn(B, 6, 197, 64, device=dev, dtype=dtype, generator=g) for _ in range(3)]
    cases = {'attn/dense_sdpa': lambda: F.scaled_dot_product_attention(q, k, v)}
    for rate in RATES:
        K = min(-(-int(rate * 197 * 1000) // 1000), 197)
        idx = torch.rand(B, 6, 196, 197, device=dev, generator=g).topk(K, -1).indices
        def gather(i=idx):
            with use_backend('torch'):
                return topk_attention(q, k, v, indices=i, dense_rows=1)
        cases[f'attn/topk_torch_keep{rate}'] = gather

        def ref(i=idx):
            with use_backend('reference'):
                return topk_attention(q, k, v, indices=i, dense_rows=1)
        cases[f'attn/topk_reference_keep{rate}'] = ref
        if dev == 'cuda':  # auto on CUDA: the connectivity as a boolean mask of one fused SDPA call
            def auto(i=idx):
                with use_backend('auto'):
                    return topk_attention(q, k, v, indices=i, dense_rows=1)
            cases[f'attn/topk_auto_masked_sdpa_keep{rate}'] = auto
    x = torch.randn(B, 3, 224, 224, device=dev, dtype=dtype, generator=g)
    deit = timm.create_model('deit_small_patch16_224').to(dev, dtype).eval()
    cases['model/deit_small_timm'] = lambda: deit(x)
    macs = {}
    for rate in RATES:
        m = timm.create_model('sparsifiner_deit_small', keep_rate=rate).to(dev, dtype).eval()
        cases[f'model/sparsifiner_deit_small_keep{rate}'] = (lambda m=m: m(x))
        if dev == 'cuda':  # the gather path on the GPU too (auto runs the masked fused kernel there)
            def model_gather(m=m):
                with use_backend('torch'):
                    return m(x)
            cases[f'model/sparsifiner_deit_small_keep{rate}_torch_gather'] = model_gather
        with torch.no_grad(), count_attention_macs() as c:
            m(x[:1])
        macs[rate] = dict(attention_macs=c.macs, predictor_macs=predictor_macs(m))
    times = {name: [] for name in cases}
    with torch.no_grad():
        for name, fn in cases.items():  # warm up
            timeit(fn, dev, 1)
        for _ in range(args.repeats):  # interleaved
            for name, fn in cases.items():
                times[name] += timeit(fn, dev, 1, warmup=0)
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = dict(median_ms=med * 1e3, img_per_s=B / med)
    for prefix, base in (('attn/', 'attn/dense_sdpa'), ('model/', 'model/deit_small_timm')):
        for name in rows:
            if name.startswith(prefix):
                rows[name]['speedup_vs_dense'] = rows[base]['median_ms'] / rows[name]['median_ms']
    result = dict(machine=machine_name(dev, args.threads if dev == 'cpu' else 0), device=dev, dtype=args.dtype,
                  batch=B, threads=args.threads, torch=torch.__version__, repeats=args.repeats, results=rows,
                  macs_per_image=macs)
    print(f"| case | ms / batch {B} | img/s | speedup vs dense |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['img_per_s']:.1f} | {r['speedup_vs_dense']:.2f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
