"""Op-level timing and peak memory of bi-level routing attention (BiFormer), and a whole-model train step.

CUDA (``--device cuda``): the biformer_small stage shapes at B=64 (56^2 x 2 heads, 28^2 x 4, 14^2 x 8, head_dim 32,
7x7 regions, top-k 1 / 4 / 16), forward+backward of attnzoo's ``flex`` and ``triton`` (fused kernels) backends against
``reference`` (the official gather, which copies K/V top-k times) and ``torch``, and of one dense SDPA call over the
same number of (query, key) pairs (every query against ``topk * tokens_per_region`` keys); median ms and peak memory
over the op call. With ``--models`` also the inference and training-step throughput (img/s) of ``biformer_small``
beside timm's ``swin_tiny_patch4_window7_224``.

CPU (``--device cpu``): the same stage shapes at a tiny batch (default 2), ``reference`` vs ``torch`` and the dense
peer, to check the script runs.

One routing (from the reference) is used for every backend, so all run the same attention.
Writes a JSON file and prints a markdown table.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import attnzoo  # noqa: F401  (registers the models)
import attnzoo.ops as ops
from attnzoo.utils.machine import machine_name
from attnzoo.utils.timing import median_ms

STAGES = [(56, 2, 1), (28, 4, 4), (14, 8, 16)]  # biformer_small: map side, heads, top-k (head_dim 32, 7 regions)


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def measure(fn, device, repeats, warmup=2):
    """Median ms of ``fn()`` and the peak memory (MiB) it allocates above what was live before."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = None
    if device == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return statistics.median(times), peak


def dense_sdpa_step(q, keys, grad):
    """fwd+bwd of one SDPA call of the queries ``q [B, H, W, heads, D]`` against ``keys`` random keys per head: as
    many (query, key) pairs as routing attention with ``keys = topk * tokens_per_region``."""
    B, H, W, heads, D = q.shape
    query = q.detach().reshape(B, H * W, heads, D).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(B, heads, keys, D, device=q.device, dtype=q.dtype).requires_grad_() for _ in range(2))
    grad = grad.reshape(B, H * W, heads, D).transpose(1, 2)

    def step():
        torch.nn.functional.scaled_dot_product_attention(query, k, v).backward(grad)
        query.grad = k.grad = v.grad = None
    return step


def op_rows(device, batch, backends, repeats, dtype):
    rows = []
    for side, heads, topk in STAGES:
        g = torch.Generator(device=device).manual_seed(0)
        shape = (batch, side, side, heads, 32)
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, generator=g).requires_grad_() for _ in range(3))
        grad = torch.randn(shape, device=device, dtype=dtype, generator=g)
        with torch.no_grad(), ops.use_backend('reference'):
            _, idx = ops.routing_attention(q, k, v, 7, topk, return_indices=True)
        row = dict(shape=f'B{batch} {side}x{side} h{heads}x32', topk=topk, keys_per_query=topk * (side // 7) ** 2)
        for backend in backends:
            def step(backend=backend):
                with ops.use_backend(backend):
                    out = ops.routing_attention(q, k, v, 7, topk, routing=idx)
                out.backward(grad)
                q.grad = k.grad = v.grad = None
            ms, peak = measure(step, device, repeats)
            row[f'{backend}_ms'] = round(ms, 3)
            if peak is not None:
                row[f'{backend}_MiB'] = round(peak, 1)
        ms, peak = measure(dense_sdpa_step(q, row['keys_per_query'], grad), device, repeats)
        row['dense_sdpa_ms'] = round(ms, 3)
        if peak is not None:
            row['dense_sdpa_MiB'] = round(peak, 1)
        if 'triton' in backends:
            row['triton_over_dense_time'] = round(row['triton_ms'] / row['dense_sdpa_ms'], 2)
            row['torch_over_triton_time'] = round(row['torch_ms'] / row['triton_ms'], 2)
            if peak is not None:
                row['triton_over_torch_mem'] = round(row['triton_MiB'] / max(row['torch_MiB'], 1e-6), 2)
        if 'flex' in backends:
            row['reference_over_flex_time'] = round(row['reference_ms'] / row['flex_ms'], 2)
            row['reference_over_flex_mem'] = round(row['reference_MiB'] / max(row['flex_MiB'], 1e-6), 2)
        rows.append(row)
    return rows


def _model_step(model, x, pass_, dtype):
    """One inference pass (eval, no grad) or one AdamW train step (train) of ``model`` on ``x`` under autocast."""
    def autocast():
        return torch.autocast(device_type=x.device.type, dtype=dtype, enabled=dtype != torch.float32)

    if pass_ == 'inference':
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x)
        return step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.randint(0, model.num_classes, (x.shape[0],), device=x.device)

    def step():
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def model_pass(name, backend, pass_, batch, repeats, dtype, device, channels_last=False):
    """``{pass}_ms, {pass}_img_per_s, {pass}_peak_MiB`` of one (model, pass) at 224 px with attnzoo's backend forced
    to ``backend``: median of ``repeats`` steps after 3 warm-up steps (CUDA events), and the allocator's peak over the
    whole pass (weights and optimizer state included; CUDA only). The model is freed on return."""
    import timm
    torch.manual_seed(0)
    if device == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = timm.create_model(name).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with ops.use_backend(backend):
        ms = median_ms(_model_step(model, x, pass_, dtype), repeats, 3, torch.device(device))
    row = {f'{pass_}_ms': round(ms, 2), f'{pass_}_img_per_s': round(batch / ms * 1e3, 1)}
    if device == 'cuda':
        row[f'{pass_}_peak_MiB'] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return row


def model_rows(device, runs, infer_batch, train_batch, repeats, dtype, channels_last=False):
    """One row per ``(model, backend)`` of ``runs``: inference at ``infer_batch`` and a train step at
    ``train_batch`` (see :func:`model_pass`)."""
    rows = []
    for name, backend in runs:
        row = dict(model=name, backend=backend)
        for pass_, batch in (('inference', infer_batch), ('train', train_batch)):
            row.update(model_pass(name, backend, pass_, batch, repeats, dtype, device, channels_last))
        print(row, flush=True)
        rows.append(row)
    return rows


def to_markdown(rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(str(r.get(k, '')) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--batch', type=int, help='default 64 on CUDA, 2 on CPU')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--dtype', choices=['bfloat16', 'float16', 'float32'], default='bfloat16',
                        help='CUDA only (the CPU run is fp32)')
    parser.add_argument('--models', action='store_true',
                        help='also time biformer_small / swin_tiny inference and a train step (at --batch)')
    parser.add_argument('--out', type=Path, help='JSON file for the results')
    args = parser.parse_args()
    cuda = args.device == 'cuda'
    batch = args.batch or (64 if cuda else 2)
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    backends = (('reference', 'torch', 'flex') + (('triton',) if ops.triton_available() else ())) if cuda \
        else ('reference', 'torch')
    rows = op_rows(args.device, batch, backends, args.repeats, dtype)
    result = dict(machine=machine_name(args.device), torch=torch.__version__, device=args.device,
                  dtype=str(dtype), rows=rows)
    print(f"machine: {result['machine']}, torch {torch.__version__}, {dtype}")
    print(to_markdown(rows))
    if args.models:
        runs = [('biformer_small', 'auto'), ('swin_tiny_patch4_window7_224', 'auto')]
        result['models'] = model_rows(args.device, runs, batch, batch, max(3, args.repeats // 2), dtype)
        print(to_markdown(result['models']))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
