"""Op-level timing of neighborhood attention against same-FLOP window attention (SDPA).

CPU (``--device cpu``): B=8, 56x56, 2 heads x 32, k=7, dilation 1 and 8, forward, fp32:
attnzoo's ``torch`` backend, ``natten.na2d`` (when installed) and non-overlapping 7x7 window
attention through ``scaled_dot_product_attention``.

CUDA (``--device cuda``): the DiNAT-Tiny stage shapes at B=64 (56^2 h2, 28^2 h4, 14^2 h8, 7^2 h16,
head_dim 32, k=7, every dilation DiNAT uses), forward and forward+backward, with and without RPB (an fp32
table, as under autocast), attnzoo's ``triton``, ``flex`` and ``torch`` backends beside window attention
through SDPA, bf16, with and without the same bias table (Swin's: a ``[heads, 49, 49]`` gather from the same
``[heads, 13, 13]`` parameter, passed to SDPA as its mask); ``triton_rpb_over_window_rpb`` is the goal ratio.

Writes a JSON file and prints a markdown table. Medians over interleaved repeats.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import attnzoo.ops as ops
from attnzoo.utils.machine import machine_name


def window_bias(rpb, window):
    """``[heads, window^2, window^2]`` relative-position bias of a window (Swin's) gathered from ``rpb``
    ``[heads, 2*window-1, 2*window-1]``, indexed by ``key - query + window - 1`` per axis."""
    pos = torch.arange(window, device=rpb.device)
    rel = pos[None, :] - pos[:, None] + window - 1  # [query, key] on one axis
    index = rel[:, None, :, None] * (2 * window - 1) + rel[None, :, None, :]  # [qy, qx, ky, kx]
    return rpb.flatten(1)[:, index.reshape(window ** 2, window ** 2)]


def window_attention(q, k, v, window, bias=None):
    """Non-overlapping ``window x window`` attention on ``[B, H, W, heads, D]`` (H, W multiples), with an optional
    ``[heads, window^2, window^2]`` bias."""
    B, H, W, h, D = q.shape

    def part(x):
        x = x.reshape(B, H // window, window, W // window, window, h, x.shape[-1])
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, h, window * window, x.shape[-1])

    out = F.scaled_dot_product_attention(part(q), part(k), part(v), attn_mask=None if bias is None else bias[None])
    out = out.reshape(B, H // window, W // window, h, window, window, D)
    return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, h, D)


def _timer(device):
    if device == 'cuda':
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def run(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    return run


def bench(fns, device, repeats, warmup=2):
    """Median milliseconds per named callable, measured interleaved so load changes hit all."""
    run = _timer(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if device == 'cuda':
        torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(run(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_rows(repeats):
    torch.manual_seed(0)
    B, H, W, heads, D, K = 8, 56, 56, 2, 32, 7
    q, k, v = (torch.randn(B, H, W, heads, D) for _ in range(3))
    rpb = torch.randn(heads, 2 * K - 1, 2 * K - 1) * 0.5
    try:
        import natten
    except ImportError:
        natten = None
    rows = []
    with torch.no_grad():
        for dilation in (1, 8):
            fns = {
                'window_sdpa': lambda: window_attention(q, k, v, K),
                'attnzoo_torch': lambda: ops.na2d(q, k, v, K, dilation),
                'attnzoo_torch_rpb': lambda: ops.na2d(q, k, v, K, dilation, rpb=rpb),
            }
            if natten is not None:
                fns['natten_na2d'] = lambda: natten.na2d(q, k, v, kernel_size=K, dilation=dilation)
            with ops.use_backend('torch'):
                times = bench(fns, 'cpu', repeats)
            row = dict(shape=f'B{B} {H}x{W} h{heads}x{D}', kernel=K, dilation=dilation, pass_='fwd',
                       **{f'{name}_ms': round(t, 3) for name, t in times.items()})
            row['torch_over_window'] = round(times['attnzoo_torch'] / times['window_sdpa'], 2)
            if natten is not None:
                row['natten_over_torch'] = round(times['natten_na2d'] / times['attnzoo_torch'], 1)
            rows.append(row)
    return rows


def cuda_rows(repeats, dtype):
    torch.manual_seed(0)
    stages = [(56, 2, (1, 8)), (28, 4, (1, 4)), (14, 8, (1, 2)), (7, 16, (1,))]
    B, D, K = 64, 32, 7
    rows = []
    for size, heads, dilations in stages:
        shape = (B, size, size, heads, D)
        q, k, v = (torch.randn(shape, device='cuda', dtype=dtype, requires_grad=True) for _ in range(3))
        rpb = (torch.randn(heads, 2 * K - 1, 2 * K - 1, device='cuda') * 0.5).requires_grad_()
        grad = torch.randn(shape, device='cuda', dtype=dtype)

        def fwd_bwd(fn):
            def run():
                out = fn()
                out.backward(grad)
            return run

        for dilation in dilations:
            def with_backend(backend, use_rpb):
                def run():
                    with ops.use_backend(backend):
                        return ops.na2d(q, k, v, K, dilation, rpb=rpb if use_rpb else None)
                return run

            fns = {'window_sdpa': lambda: window_attention(q, k, v, K),
                   'window_sdpa_rpb': lambda: window_attention(q, k, v, K, window_bias(rpb, K).to(dtype)),
                   'triton': with_backend('triton', False), 'triton_rpb': with_backend('triton', True),
                   'flex': with_backend('flex', False), 'flex_rpb': with_backend('flex', True),
                   'torch': with_backend('torch', False), 'torch_rpb': with_backend('torch', True)}
            with torch.no_grad():
                fwd = bench(fns, 'cuda', repeats)
            both = bench({name: fwd_bwd(fn) for name, fn in fns.items()}, 'cuda', repeats)
            for pass_, times in (('fwd', fwd), ('fwd+bwd', both)):
                row = dict(shape=f'B{B} {size}x{size} h{heads}x{D}', kernel=K, dilation=dilation, pass_=pass_,
                           **{f'{name}_ms': round(t, 4) for name, t in times.items()})
                for name in ('triton', 'triton_rpb', 'flex', 'flex_rpb', 'torch_rpb'):
                    row[f'{name}_over_window'] = round(times[name] / times['window_sdpa'], 2)
                row['triton_rpb_over_window_rpb'] = round(times['triton_rpb'] / times['window_sdpa_rpb'], 2)
                rows.append(row)
    return rows


def to_markdown(rows):
    keys = list(rows[0])
    lines = ['| ' + ' | '.join(k.rstrip('_') for k in keys) + ' |', '|' + '---|' * len(keys)]
    for row in rows:
        lines.append('| ' + ' | '.join(str(row.get(k, '')) for k in keys) + ' |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--dtype', choices=['bfloat16', 'float16', 'float32'], default='bfloat16',
                        help='CUDA only (the CPU run is fp32)')
    parser.add_argument('--out', type=Path, help='JSON file for the results')
    args = parser.parse_args()
    if args.device == 'cpu':
        rows = cpu_rows(args.repeats)
    else:
        rows = cuda_rows(args.repeats, getattr(torch, args.dtype))
    machine = machine_name(args.device)
    result = dict(machine=machine, torch=torch.__version__, device=args.device, rows=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(f'machine: {machine}, torch {torch.__version__}')
    print(to_markdown(rows))


if __name__ == '__main__':
    main()
