"""The fused Triton kernels of bi-level routing attention, run on the CPU by Triton's interpreter
(``TRITON_INTERPRET=1``, in a subprocess: the variable must be set before Triton compiles anything) against the
fp64 ``reference`` backend: forward and dQ/dK/dV, through strided ``qkv`` views, odd maps and region sizes from
1x1 to 7x7 tokens, topk 1 and topk == R, head dims 16/32/48, fp32 and fp16 (the interpreter's ``tl.dot`` reads
bf16 as integers, so bf16 is checked on the GPU only, by ``test_routing_cuda.py``), and BiFormer's attention layer
on a padded map (legacy auto-pad and the nchw layout). The same kernels on CUDA are checked by
``test_routing_cuda.py``."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attnzoo.ops as ops

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import attnzoo.ops as ops
    from attnzoo.ops import routing as R

    def rel(a, b):
        return float((a.double() - b.double()).norm() / b.double().norm())

    def op_case(case):
        """The op under backend 'triton' (the kernels directly where the op would not run them: topk == R, other
        tiles), both backends on one routing; q/k/v as views of one qkv tensor (``qkv_view``) or separate."""
        B, H, W, heads, dk, dv = case['shape']
        sh, sw = case['regions']
        topk = case['topk']
        dtype = getattr(torch, case['dtype'])
        if case['qkv_view']:
            base = [torch.randn(B, H, W, 3, heads, dk)]
        else:
            base = [torch.randn(B, H, W, heads, d) for d in (dk, dk, dv)]
        grad_out = torch.randn(B, H, W, heads, dv)
        scale = (heads * dk) ** -0.5
        q, k = (base[0].unbind(3) if case['qkv_view'] else base)[:2]
        idx = R._route(q.double(), k.double(), sh, sw, topk, scale)
        runs = {}
        for backend, cast in (('triton', dtype), ('reference', torch.float64)):
            leaves = [t.to(cast).requires_grad_() for t in base]
            q, k, v = leaves[0].unbind(3) if case['qkv_view'] else leaves
            if backend == 'triton' and ('tiles' in case or topk == sh * sw):
                from attnzoo.ops import _routing_triton as kernels
                tiles = tuple(case.get('tiles', kernels.TILES))
                out, lse = kernels.routing_forward(q, k, v, idx, sh, sw, scale, tiles)
                grads = kernels.routing_backward(grad_out.to(cast), q, k, v, out, lse, idx, sh, sw, scale, tiles)
            else:
                with ops.use_backend(backend):
                    out = ops.routing_attention(q, k, v, (sh, sw), topk, routing=idx)
                grads = torch.autograd.grad(out, (q, k, v), grad_out.to(cast))
            runs[backend] = [out, *grads]
        return [rel(a, b) for a, b in zip(runs['triton'], runs['reference'])]

    def layer_case(case):
        """BiFormer's attention layer on a map that is not a multiple of the region grid: output and input gradient
        under 'triton' against 'reference' (fp64 parameters and input for the reference)."""
        from attnzoo.models.biformer import BiLevelRoutingAttention
        layer = BiLevelRoutingAttention(32, 2, num_regions=case['num_regions'], topk=case['topk'],
                                        attn_layout=case['layout'])
        x = torch.randn(2, *case['map'], 32)
        grad_out = torch.randn(2, *case['map'], 32)
        runs = {}
        for backend, cast in (('triton', torch.float32), ('reference', torch.float64)):
            layer = layer.to(cast)
            inp = x.to(cast).requires_grad_()
            with ops.use_backend(backend):
                out = layer(inp)
            runs[backend] = [out, torch.autograd.grad(out, inp, grad_out.to(cast))[0]]
        return [rel(a, b) for a, b in zip(runs['triton'], runs['reference'])]

    results = []
    for case in json.loads(sys.argv[1]):
        torch.manual_seed(0)
        results.append(layer_case(case) if 'layout' in case else op_case(case))
    print(json.dumps(results))
''')

# shape: (B, H, W, heads, Dk, Dv); regions: (Sh, Sw); tokens per region = (H / Sh) x (W / Sw)
CASES = [
    dict(shape=(2, 9, 8, 2, 16, 16), regions=(3, 4), topk=5, dtype='float32', qkv_view=True),  # 3x2, odd map
    dict(shape=(1, 5, 7, 1, 16, 16), regions=(5, 7), topk=3, dtype='float32', qkv_view=False),  # 1x1 regions
    dict(shape=(1, 8, 8, 2, 32, 32), regions=(4, 4), topk=16, dtype='float32', qkv_view=True),  # 2x2, topk == R
    dict(shape=(1, 14, 14, 1, 48, 48), regions=(2, 2), topk=1, dtype='float32', qkv_view=False),  # 7x7, topk 1
    dict(shape=(3, 6, 6, 1, 16, 32), regions=(3, 3), topk=2, dtype='float32', qkv_view=False),  # Dv != Dk
    dict(shape=(1, 8, 8, 2, 16, 16), regions=(4, 4), topk=3, dtype='float16', qkv_view=True),
    dict(map=(9, 10), num_regions=4, topk=3, layout='legacy'),  # zero-padded to 12x12 before qkv
    dict(map=(9, 10), num_regions=4, topk=3, layout='nchw'),  # q/k/v padded to 10x12, routing given
]
# Regions larger than a block: the walk over 16-token chunks of 7x7 and 5x6 regions (slow in the interpreter).
SLOW_CASES = [
    dict(shape=(1, 14, 14, 1, 16, 16), regions=(2, 2), topk=2, dtype='float32', qkv_view=True, tiles=(16, 16)),
    dict(shape=(1, 10, 12, 1, 32, 32), regions=(2, 2), topk=4, dtype='float32', qkv_view=False, tiles=(16, 16)),
]


def _interpret(cases):
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(cases)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case, errors in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1])):
        tol = 2e-3 if case.get('dtype') == 'float16' else 1e-5
        assert len(errors) == (2 if 'layout' in case else 4), case
        assert max(errors) < tol, (case, errors)


@needs_triton
def test_kernels_match_reference_in_the_interpreter():
    _interpret(CASES)


@needs_triton
@pytest.mark.slow
def test_chunked_regions_match_reference_in_the_interpreter():
    _interpret(SLOW_CASES)


@needs_triton
def test_reverse_routing_lists_every_query_region_under_its_key_region():
    from attnzoo.ops._routing_triton import reverse_routing
    g = torch.Generator().manual_seed(0)
    B, R, topk = 3, 12, 4
    idx = torch.stack([torch.stack([torch.randperm(R, generator=g)[:topk] for _ in range(R)]) for _ in range(B)])
    order, first = reverse_routing(idx)
    assert first[0] == 0 and first[-1] == B * R * topk
    for b in range(B):
        for key in range(R):
            entries = order[first[b * R + key]:first[b * R + key + 1]]
            expected = sorted(b * R * topk + r * topk + s for r in range(R) for s in range(topk)
                              if idx[b, r, s] == key)
            assert entries.tolist() == expected, (b, key)


def test_unsupported_arguments_are_named():
    """Forced ``triton`` without a device that runs it, or with inputs the kernels do not cover, raises and says
    why."""
    q = torch.randn(1, 8, 8, 2, 16)
    if not ops.triton_available():
        with ops.use_backend('triton'), pytest.raises(RuntimeError, match="backend 'triton' needs Triton"):
            ops.routing_attention(q, q, q, 4, 2)
        return
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    wide = torch.randn(1, 8, 8, 2, 160, device=device)
    with ops.use_backend('triton'), pytest.raises(ValueError, match='head_dim 160'):
        ops.routing_attention(wide, wide, wide, 4, 2)
    double = q.to(device, torch.float64)
    with ops.use_backend('triton'), pytest.raises(ValueError, match='dtype torch.float64'):
        ops.routing_attention(double, double, double, 4, 2)
