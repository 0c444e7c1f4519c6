"""The fused Triton kernels of 2-D neighborhood attention, run on the CPU by Triton's interpreter
(``TRITON_INTERPRET=1``, in a subprocess: the variable must be set before Triton compiles anything)
against the fp64 reference: forward, dQ/dK/dV and the RPB gradient, through strided ``qkv`` views, with
dilation groups of unequal length and non-square kernels. The same kernels on CUDA (bf16 too) are checked
by ``test_neighborhood_cuda.py``."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attnzoo.ops as ops

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import attnzoo.ops as ops

    def rel(a, b):
        return float((a.double() - b.double()).norm() / b.double().norm())

    results = []
    for case in json.loads(sys.argv[1]):
        torch.manual_seed(0)
        B, H, W, heads, D = case['shape']
        kernel, dil = case['kernel'], case['dilation']
        dtype = getattr(torch, case['dtype'])
        qkv = torch.randn(B, H, W, 3, heads, D)
        rpb = torch.randn(heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1) * 0.5 if case['rpb'] else None
        grad_out = torch.randn(B, H, W, heads, D)
        runs = {}
        if 'tiles' in case:  # the kernels directly, with other tile shapes than the op's
            from attnzoo.ops import _na_triton
            q, k, v = qkv.unbind(3)
            scale = D ** -0.5
            out, lse = _na_triton.na2d_forward(q, k, v, rpb, kernel, dil, scale, tuple(case['tiles']))
            runs['triton'] = [out] + list(_na_triton.na2d_backward(
                grad_out, q, k, v, out, lse, rpb, kernel, dil, scale, True, tuple(case['tiles'])))
        for backend, cast in (('triton', dtype), ('reference', torch.float64)):
            if backend in runs:
                continue
            x = qkv.to(cast).requires_grad_()
            table = None if rpb is None else rpb.to(torch.float64 if cast == torch.float64 else torch.float32)
            table = None if table is None else table.requires_grad_(case['rpb_grad'])
            with ops.use_backend(backend):
                out = ops.na2d(*x.unbind(3), kernel, dil, rpb=table)
            leaves = [x] + ([table] if case['rpb'] and case['rpb_grad'] else [])
            grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
            runs[backend] = [out] + ([*grads[0].unbind(3), *grads[1:]] if 'tiles' in case else list(grads))
        results.append([rel(a, b) for a, b in zip(runs['triton'], runs['reference'])])
    print(json.dumps(results))
''')

CASES = [
    dict(shape=(2, 11, 9, 2, 16), kernel=(5, 5), dilation=(2, 1), rpb=True, rpb_grad=True, dtype='float32'),
    dict(shape=(1, 13, 10, 1, 32), kernel=(3, 5), dilation=(1, 2), rpb=True, rpb_grad=True, dtype='float32'),
    dict(shape=(1, 14, 21, 2, 16), kernel=(7, 5), dilation=(2, 4), rpb=True, rpb_grad=False, dtype='float32'),
    dict(shape=(2, 7, 7, 2, 16), kernel=(7, 7), dilation=(1, 1), rpb=False, rpb_grad=False, dtype='float32'),
    dict(shape=(1, 17, 19, 2, 16), kernel=(5, 5), dilation=(1, 1), rpb=True, rpb_grad=True, dtype='float16'),
    dict(shape=(1, 19, 23, 2, 16), kernel=(5, 7), dilation=(2, 1), rpb=True, rpb_grad=True, dtype='float32',
         tiles=(4, 16, 4, 8)),
]


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')
def test_kernels_match_reference_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(CASES)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case, errors in zip(CASES, json.loads(proc.stdout.strip().splitlines()[-1])):
        tol = 1e-5 if case['dtype'] == 'float32' else 2e-3
        assert len(errors) == (5 if 'tiles' in case else 2 + (case['rpb'] and case['rpb_grad'])), case
        assert max(errors) < tol, (case, errors)


def test_unsupported_arguments_are_named():
    """Forced ``triton`` with arguments the kernels do not cover, or without CUDA, raises and says why."""
    q = torch.randn(1, 9, 9, 2, 16)
    if not ops.triton_available():
        with ops.use_backend('triton'), pytest.raises(RuntimeError, match="backend 'triton' needs Triton"):
            ops.na2d(q, q, q, 3)
        return
    cases = [(dict(is_causal=True), 'is_causal'), (dict(dropout_p=0.1), 'dropout_p=0.1')]
    for kwargs, match in cases:
        with ops.use_backend('triton'), pytest.raises(ValueError, match=match):
            ops.na2d(q, q, q, 3, **kwargs)
    with ops.use_backend('triton'), pytest.raises(ValueError, match='head_dim 24'):
        ops.na2d(*[torch.randn(1, 9, 9, 2, 24)] * 3, 3)
    with ops.use_backend('triton'), pytest.raises(ValueError, match='1-D inputs'):
        ops.na1d(*[torch.randn(1, 9, 2, 16)] * 3, 3)
