"""The measurements behind the CUDA backend choices (``auto``) of the routing and neighborhood ops.

    python benchmarks/backend_choices.py routing   # flex block size 128 vs 64, against reference / torch
    python benchmarks/backend_choices.py na        # RPB layouts in flex, the tiled torch path (also with a
                                                   # batch-expanded bias for SDPA's fused kernel), window SDPA
    python benchmarks/backend_choices.py triton_tiles  # tile shapes of the Triton NA kernels at the DiNAT-T shapes
    python benchmarks/backend_choices.py profile   # profiler tables of a train step (Swin-T and 4 of ours)
    python benchmarks/backend_choices.py factorized  # FaSA's few-key attention: SDPA kernels against matmul-softmax
    python benchmarks/backend_choices.py overhead  # host (CPU) cost per NA call and per batch-8 train step

bf16, B=64, the biformer_small / DiNAT-Tiny stage shapes; fwd+bwd and forward medians of 20 (CUDA events), peak
MiB of one fwd+bwd, relative errors. Writes ``$OUT/backend_choices_<part>.json`` (``$OUT`` or /tmp); results of the
H200 run are in ``results/h200_backend_choices.json`` and discussed in README.md here.
"""
import functools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnzoo.ops import neighborhood as N  # noqa: E402
from attnzoo.ops import routing as R  # noqa: E402

OUT = os.environ.get('OUT', '/tmp')
dev = 'cuda'
results = {}

def bench(fn, iters=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]

def peak(fn):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(); torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20

def fwd_bwd(fn, *inputs):
    def run():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run

def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()

# ---------------- routing
def routing_part():
    cfgs = [(56, 2, 1), (28, 4, 4), (14, 8, 16)]
    B, D, S = 64, 32, 7
    compiled = N._compiled_flex_attention()
    for H, h, topk in cfgs:
        q, k, v = (torch.randn(B, H, H, h, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        idx = R._route(q, k, S, S, topk, (h * D) ** -0.5)
        Rn, T = S * S, (H // S) ** 2
        scale = (h * D) ** -0.5
        ref = R._routing_reference(q.float(), k.float(), v.float(), idx, S, S, scale)
        row = {}
        def flex_bs(bs, q, k, v):
            def hf(x):
                return R._to_regions(x, S, S).reshape(B, Rn * T, h, D).transpose(1, 2)
            bm = R.flex_routing_block_mask(idx, Rn, T, block_size=bs)
            o = compiled(hf(q), hf(k), hf(v), block_mask=bm, scale=scale)
            return R._from_regions(o.transpose(1, 2).reshape(B, Rn, T, h, D), S, S, H, H)
        variants = {
            'reference': lambda q, k, v: R._routing_reference(q, k, v, idx, S, S, scale),
            'torch': lambda q, k, v: R._routing_torch(q, k, v, idx, S, S, scale),
            'flex128': functools.partial(flex_bs, 128),
            'flex64': functools.partial(flex_bs, 64),
        }
        for name, fn in variants.items():
            try:
                out = fn(q, k, v)
                err = rel(out, ref)
                t = bench(fwd_bwd(fn, q, k, v))
                tf = bench(lambda: fn(q, k, v).sum())
                m = peak(fwd_bwd(fn, q, k, v))
                row[name] = dict(ms=round(t, 3), fwd_ms=round(tf, 3), mib=round(m, 1), rel_err=err)
            except Exception as e:
                row[name] = dict(error=f'{type(e).__name__}: {str(e)[:300]}')
            print('routing', H, h, topk, name, row[name], flush=True)
        results[f'routing_{H}_{h}_{topk}'] = row
    # fp32 compile check at 56^2 top-1
    for bs in (128, 64):
        try:
            H, h, topk = 56, 2, 1
            q, k, v = (torch.randn(2, H, H, h, D, device=dev, requires_grad=True) for _ in range(3))
            idx = R._route(q, k, S, S, topk, (h * D) ** -0.5)
            T = 64
            def hf(x):
                return R._to_regions(x, S, S).reshape(2, 49 * T, h, D).transpose(1, 2)
            bm = R.flex_routing_block_mask(idx, 49, T, block_size=bs)
            o = compiled(hf(q), hf(k), hf(v), block_mask=bm, scale=(h * D) ** -0.5)
            o.sum().backward()
            results[f'routing_fp32_bs{bs}'] = 'ok'
        except Exception as e:
            results[f'routing_fp32_bs{bs}'] = f'{type(e).__name__}: {str(e)[-400:]}'
        print('fp32', bs, results[f'routing_fp32_bs{bs}'], flush=True)

# ---------------- NA RPB gradient through flex
def na_flex_rpb_q(q, k, v, rpb, kernel, per_batch=False):
    """flex NA where the bias is a per-(head, query) table [h, N, P] (P = prod(2k-1)) expanded from rpb."""
    n = len(kernel)
    B, *spatial, heads, D = q.shape
    spatial = tuple(spatial)
    Ntok = math.prod(spatial)
    P = math.prod(2 * ks - 1 for ks in kernel)
    sizes = [2 * ks - 1 for ks in kernel]
    if per_batch:
        table = rpb.to(q.dtype).reshape(1, heads, 1, P).expand(B, heads, Ntok, P).contiguous()
    else:
        table = rpb.to(q.dtype).reshape(heads, 1, P).expand(heads, Ntok, P).contiguous()
    def score_mod(score, b, h, q_idx, kv_idx):
        qc, kc = N._token_coords(q_idx, spatial), N._token_coords(kv_idx, spatial)
        flat = N._axis_rel(qc[0], kc[0], kernel[0])
        for a in range(1, n):
            flat = flat * sizes[a] + N._axis_rel(qc[a], kc[a], kernel[a])
        if per_batch:
            return score + table[b, h, q_idx, flat]
        return score + table[h, q_idx, flat]
    bm = N._flex_block_mask(spatial, kernel, (False,) * n, q.device)
    out = N._compiled_flex_attention()(q.flatten(1, n).transpose(1, 2), k.flatten(1, n).transpose(1, 2),
                                       v.flatten(1, n).transpose(1, 2), score_mod=score_mod, block_mask=bm,
                                       scale=D ** -0.5)
    return out.transpose(1, 2).reshape(B, *spatial, heads, D)

def na_tiled_full_bias(q, k, v, rpb, kernel):
    """The tiled path with the bias expanded to the whole batch and made contiguous, so that SDPA's fused
    (memory-efficient) kernel may take a bias that needs a gradient instead of the unfused math path."""
    B, H, W, heads, D = q.shape
    plan = N._tile_plan((H, W), kernel, (False, False), q.device)
    nt, tt, rr = plan.num_tiles, plan.tile_tokens, plan.halo_tokens

    def tiles(x, index, tokens):
        rows = x.flatten(1, 2).transpose(1, 2).reshape(B * heads, -1, D)
        return rows.index_select(1, index).view(B, heads * nt, tokens, D)

    table = torch.cat([rpb.reshape(heads, -1), rpb.new_full((heads, 1), float('-inf'))], 1)
    bias = table.gather(1, plan.bias_index.view(1, -1).expand(heads, -1)).to(q.dtype).view(1, heads * nt, tt, rr)
    bias = bias.expand(B, -1, -1, -1).contiguous()
    out = F.scaled_dot_product_attention(tiles(q, plan.q_index, tt), tiles(k, plan.k_index, rr),
                                         tiles(v, plan.k_index, rr), attn_mask=bias, scale=D ** -0.5)
    out = out.reshape(B * heads, nt * tt, D).index_select(1, plan.out_index)
    return out.view(B, heads, -1, D).transpose(1, 2).reshape(B, H, W, heads, D)


def na_part():
    B, D, ks = 64, 32, 7
    for H, h in [(56, 2), (28, 4), (14, 8)]:
        row = {}
        q, k, v = (torch.randn(B, H, H, h, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        rpb = (torch.randn(h, 13, 13, device=dev) * 0.5).requires_grad_()
        def grads(fn):
            for t in (q, k, v, rpb):
                t.grad = None
            out = fn()
            out.float().square().mean().backward()
            return out.detach(), rpb.grad.clone(), q.grad.clone()
        variants = {
            'torch': lambda: N._na_tiled(q, k, v, (ks, ks), (False, False), rpb, D ** -0.5, 0.0),
            'torch_full_bias': lambda: na_tiled_full_bias(q, k, v, rpb, (ks, ks)),
            'flexA': lambda: N._na_flex(q, k, v, (ks, ks), (False, False), rpb, D ** -0.5),
            'flexB': lambda: na_flex_rpb_q(q, k, v, rpb, (ks, ks)),
            'flexC': lambda: na_flex_rpb_q(q, k, v, rpb, (ks, ks), per_batch=True),
            'flex_norpb': lambda: N._na_flex(q, k, v, (ks, ks), (False, False), None, D ** -0.5),
            'window_sdpa': lambda: F.scaled_dot_product_attention(
                *(t.reshape(B, H // 7, 7, H // 7, 7, h, D).permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, h, 49, D) for t in (q, k, v))),
        }
        base = grads(variants['torch'])
        for name, fn in variants.items():
            try:
                if name not in ('window_sdpa', 'flex_norpb'):
                    o, g, gq = grads(fn)
                    errs = dict(out=rel(o, base[0]), rpb_grad=rel(g, base[1]), q_grad=rel(gq, base[2]))
                else:
                    errs = {}
                t = bench(fwd_bwd(fn))
                tf = bench(lambda: fn())
                m = peak(fwd_bwd(fn))
                row[name] = dict(ms=round(t, 3), fwd_ms=round(tf, 3), mib=round(m, 1), **errs)
            except Exception as e:
                row[name] = dict(error=f'{type(e).__name__}: {str(e)[-300:]}')
            print('na', H, h, name, row[name], flush=True)
        results[f'na_{H}_{h}'] = row

TRITON_TILES = [(8, 8, 2, 16), (8, 8, 4, 8), (8, 8, 1, 16), (8, 8, 2, 8), (16, 8, 2, 16), (8, 16, 2, 16),
                 (4, 16, 2, 16), (16, 16, 2, 16)]


def triton_tiles_part():
    """fwd and fwd+bwd (with the RPB gradient) of the Triton NA kernels for each tile shape (BH, BW, KR, KC)."""
    from attnzoo.ops import _na_triton as T
    B, D, ks = 64, 32, (7, 7)
    for H, h, dil in [(56, 2, 1), (56, 2, 8), (28, 4, 1), (28, 4, 4), (14, 8, 1), (14, 8, 2), (7, 16, 1)]:
        q, k, v, grad = (torch.randn(B, H, H, h, D, device=dev, dtype=torch.bfloat16) for _ in range(4))
        rpb = torch.randn(h, 13, 13, device=dev) * 0.5
        scale, row, base = D ** -0.5, {}, None
        for tiles in TRITON_TILES:
            name = 'x'.join(map(str, tiles))
            try:
                def fwd():
                    return T.na2d_forward(q, k, v, rpb, ks, (dil, dil), scale, tiles)

                def both():
                    out, lse = fwd()
                    return T.na2d_backward(grad, q, k, v, out, lse, rpb, ks, (dil, dil), scale, True, tiles)
                outs = (fwd()[0], *both())
                base = base or outs
                row[name] = dict(fwd_ms=round(bench(fwd), 3), fwd_bwd_ms=round(bench(both), 3),
                                 max_rel_err=max(rel(a, b) for a, b in zip(outs, base)))
            except Exception as e:
                row[name] = dict(error=f'{type(e).__name__}: {str(e)[-300:]}')
            print('triton', H, h, dil, name, row[name], flush=True)
        results[f'triton_{H}_{h}_d{dil}'] = row


# FaViT-B2's factorized attention at B=128: (stage, group, queries N, shared keys M, head_dim, heads)
FAVIT_B2_ATTENTION = [(1, 'global', 3136, 49, 8, 1), (1, 'local', 3136, 49, 28, 1),
                      (2, 'global', 784, 49, 16, 1), (2, 'local', 784, 49, 28, 2),
                      (3, 'global', 196, 49, 32, 1), (3, 'local', 196, 49, 28, 4),
                      (4, 'global', 49, 49, 64, 1), (4, 'local', 49, 49, 56, 8)]


def factorized_part():
    """fwd and fwd+bwd of every query against one small key set (FaSA): the SDPA kernels PyTorch may pick, and
    the plain matmul-softmax-matmul (``reference`` backend), which keeps the [N, M] logits but batches well."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from attnzoo.ops import factorized as Fz
    from attnzoo.ops import use_backend

    def sdpa_with(backend):
        def run(q, k, v):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)
        return run

    def op_with(backend):
        def run(q, k, v):
            with use_backend(backend):
                return Fz.factorized_attention(q, k, v)
        return run
    variants = {'sdpa_flash': sdpa_with(SDPBackend.FLASH_ATTENTION),
                'sdpa_efficient': sdpa_with(SDPBackend.EFFICIENT_ATTENTION),
                'sdpa_cudnn': sdpa_with(SDPBackend.CUDNN_ATTENTION),
                'op_torch': op_with('torch'), 'op_reference': op_with('reference')}
    B = 128
    for stage, group, n, m, d, h in FAVIT_B2_ATTENTION:
        q = torch.randn(B, h, n, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(B, h, m, d, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
        row = {}
        for name, fn in variants.items():
            try:
                err = rel(fn(q, k, v), ref)
                row[name] = dict(fwd_bwd_ms=round(bench(fwd_bwd(fn, q, k, v)), 3),
                                 fwd_ms=round(bench(lambda: fn(q, k, v)), 3),
                                 mib=round(peak(fwd_bwd(fn, q, k, v)), 1), rel_err=err)
            except Exception as e:
                row[name] = dict(error=f'{type(e).__name__}: {str(e)[:200]}')
            print('factorized', stage, group, name, row[name], flush=True)
        results[f'favit_b2_stage{stage}_{group}'] = dict(queries=n, keys=m, head_dim=d, heads=h, **row)


def train_step_and_inference(name: str, batch: int):
    """``(step, infer)`` closures over timm model ``name`` on CUDA (channels_last) and one random batch of 224²
    images: a bf16-autocast train step with AdamW, and a bf16 pass without gradients (the model stays in the
    train mode timm creates it in)."""
    import timm
    model = timm.create_model(name).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer():
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
            model(x)
    return step, infer


def profile_train_step(name: str) -> str:
    """torch.profiler table (by CUDA time) of 3 bf16 train steps of ``name`` at batch 128, after 4 warm-up steps."""
    from torch.profiler import profile, ProfilerActivity
    step, _ = train_step_and_inference(name, 128)
    for _ in range(4):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by='cuda_time_total', row_limit=25, max_name_column_width=70)


def profile_part():
    # Swin-T first: the peer's step is the yardstick for where ours spend the extra time
    for name in ['swin_tiny_patch4_window7_224', 'dinat_tiny', 'biformer_small', 'favit_b2', 'l2vit_tiny']:
        table = profile_train_step(name)
        open(f'{OUT}/profile_{name}.txt', 'w').write(table)
        print(name, '\n'.join(table.splitlines()[:30]), sep='\n', flush=True)
        torch.cuda.empty_cache()


def host_ms(fn, iters=100, warm=10):
    """Host wall-clock ms per call of ``fn`` (synchronised once at the end): at sizes too small to keep the GPU
    busy this is the CPU cost of the Python code, the dispatcher and the kernel launches."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


# Two no-op Triton kernels, with 6 pointers + 28 ints (the NA forward kernel's runtime arguments) and with
# 6 pointers + 2 ints: what Triton's launcher costs per argument.
@triton.jit
def _noop_34_args(P0, P1, P2, P3, P4, P5, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15,
                  a16, a17, a18, a19, a20, a21, a22, a23, a24, a25, a26, a27, N: tl.constexpr):
    pass


@triton.jit
def _noop_8_args(P0, P1, P2, P3, P4, P5, a0, a1, N: tl.constexpr):
    pass


def python_profile(fn, calls: int, path: str) -> None:
    """cProfile of ``calls`` calls of ``fn`` (top 30 functions by own time) written to ``path``."""
    import cProfile
    import io
    import pstats
    fn()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats('tottime').print_stats(30)
    open(path, 'w').write(text.getvalue())


def host_bound_step(name: str, python_profile_path: Optional[str] = None) -> dict:
    """Host ms of one bf16 train step (AdamW) and of one inference pass of ``name`` at batch 8; with
    ``python_profile_path``, also a cProfile of 5 train steps."""
    step, infer = train_step_and_inference(name, 8)
    row = dict(train_step_b8_ms=round(host_ms(step, iters=20, warm=3), 2),
               inference_b8_ms=round(host_ms(infer, iters=20, warm=3), 2))
    if python_profile_path:
        python_profile(step, 5, python_profile_path)
    return row


def overhead_part():
    """Host cost per call of the NA launch paths (one tiny map, so the GPU idles) and per train step of the
    models at batch 8 (host-bound), next to one aten op and SDPA fwd+bwd."""
    from attnzoo.ops import _na_triton as T
    results['host_cpu'] = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                                if line.startswith('model name')), 'unknown')
    rows = {}

    def measure(label, fn):
        try:
            rows[label] = round(host_ms(fn), 4)
        except Exception as e:
            rows[label] = f'{type(e).__name__}: {str(e)[:200]}'
    x = torch.randn(16, device=dev)
    measure('aten_add', lambda: x + x)
    q, k, v = (torch.randn(1, 14, 14, 2, 32, device=dev, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    rpb = torch.zeros(2, 13, 13, device=dev, requires_grad=True)
    qd, kd, vd, rd = (t.detach() for t in (q, k, v, rpb))
    grad = torch.ones_like(q)
    measure('triton_na_forward_launcher', lambda: T.na2d_forward(qd, kd, vd, rd, (7, 7), (1, 1), 0.2))
    out, lse = T.na2d_forward(qd, kd, vd, rd, (7, 7), (1, 1), 0.2)
    measure('triton_na_backward_launcher',
            lambda: T.na2d_backward(grad, qd, kd, vd, out, lse, rd, (7, 7), (1, 1), 0.2, True))
    with torch.no_grad():
        measure('custom_op_forward_nograd', lambda: N._na2d_fused(qd, kd, vd, rd, 7, 7, 1, 1, 0.2))
    measure('na2d_fwd_bwd', lambda: N.na2d(q, k, v, 7, rpb=rpb).backward(grad))
    # the eager autograd.Function alone: the same launchers without na2d's checks or the custom op's dispatch
    measure('autograd_function_fwd_bwd',
            lambda: N._NA2dFusedFunction.apply(q, k, v, rpb, (7, 7), (1, 1), 0.2).backward(grad))
    qs, ks, vs = (t.detach().reshape(1, 196, 2, 32).transpose(1, 2).requires_grad_() for t in (q, k, v))
    gs = torch.ones_like(qs)
    measure('sdpa_fwd_bwd', lambda: F.scaled_dot_product_attention(qs, ks, vs).backward(gs))
    ptrs = [qd] * 6
    measure('triton_noop_34_args', lambda: _noop_34_args[(1,)](*ptrs, *range(3, 31), N=1))
    measure('triton_noop_8_args', lambda: _noop_8_args[(1,)](*ptrs, 3, 4, N=1))
    compiled = _noop_8_args[(1,)](*ptrs, 3, 4, N=1)
    measure('triton_noop_8_args_compiled_runner', lambda: compiled[(1, 1, 1)](*ptrs, 3, 4, 1))
    python_profile(lambda: N.na2d(q, k, v, 7, rpb=rpb).backward(grad), 200, f'{OUT}/cprofile_na2d_fwd_bwd.txt')
    results['per_call_ms'] = rows
    print('per call ms', rows, flush=True)

    steps = {}
    for name in ['swin_tiny_patch4_window7_224', 'dinat_tiny', 'biformer_small', 'favit_b2', 'l2vit_tiny']:
        steps[name] = host_bound_step(name, f'{OUT}/cprofile_step_{name}.txt')
        print(name, steps[name], flush=True)
        torch.cuda.empty_cache()
    results['host_bound_steps'] = steps


def main():
    parts = {'routing': routing_part, 'na': na_part, 'triton_tiles': triton_tiles_part, 'profile': profile_part,
             'factorized': factorized_part, 'overhead': overhead_part}
    if len(sys.argv) != 2 or sys.argv[1] not in parts:
        raise SystemExit(f'usage: python benchmarks/backend_choices.py {{{"|".join(parts)}}}')
    if not torch.cuda.is_available():
        raise SystemExit('needs a CUDA device')
    part = sys.argv[1]
    try:
        parts[part]()
    except Exception:  # keep what was measured so far
        traceback.print_exc()
    json.dump(results, open(f'{OUT}/backend_choices_{part}.json', 'w'), indent=1, default=str)


if __name__ == '__main__':
    main()
