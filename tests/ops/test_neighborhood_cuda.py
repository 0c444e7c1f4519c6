"""CUDA backends of neighborhood attention (flex, natten) against the reference. Skipped without a GPU."""
import pytest
import torch

import attnzoo.ops as ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

CASES = [
    ((56, 56), 7, 1, False),
    ((56, 56), 7, 8, False),   # every dilation group is 7x7: the full-attention path
    ((30, 41), 7, (2, 3), False),
    ((28, 20), 5, 1, (True, False)),
    ((64,), 9, 3, False),
    ((8, 10, 12), 3, (1, 2, 1), False),
]


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize('spatial,kernel,dilation,causal', CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('with_rpb', [True, False])
def test_flex_matches_reference(spatial, kernel, dilation, causal, dtype, with_rpb):
    n = len(spatial)
    fn = {1: ops.na1d, 2: ops.na2d, 3: ops.na3d}[n]
    g = torch.Generator(device='cuda').manual_seed(0)
    shape = (2, *spatial, 4, 32)
    base = [torch.randn(shape, device='cuda', generator=g) for _ in range(3)]
    base.append(torch.randn(4, *[2 * kernel - 1] * n, device='cuda', generator=g) * 0.5)
    grad_out = torch.randn(shape, device='cuda', generator=g)
    results = {}
    for backend, cast in (('reference', torch.float64), ('flex', dtype)):
        leaves = [t.to(cast).requires_grad_() for t in base]
        with ops.use_backend(backend):
            out = fn(*leaves[:3], kernel, dilation, causal, rpb=leaves[3] if with_rpb else None)
        used = leaves if with_rpb else leaves[:3]
        grads = torch.autograd.grad(out, used, grad_out.to(cast))
        results[backend] = (out, grads)
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    assert _rel_err(results['flex'][0], results['reference'][0]) < tol
    for g_flex, g_ref in zip(results['flex'][1], results['reference'][1]):
        assert torch.isfinite(g_flex.float()).all()
        assert _rel_err(g_flex, g_ref) < tol * 2


@pytest.mark.parametrize('spatial,kernel,dilation,causal', CASES)
def test_torch_backend_on_cuda_matches_reference(spatial, kernel, dilation, causal):
    n = len(spatial)
    fn = {1: ops.na1d, 2: ops.na2d, 3: ops.na3d}[n]
    g = torch.Generator(device='cuda').manual_seed(0)
    q, k, v = (torch.randn(2, *spatial, 4, 32, device='cuda', generator=g) for _ in range(3))
    rpb = torch.randn(4, *[2 * kernel - 1] * n, device='cuda', generator=g).requires_grad_()
    outs = {}
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            out = fn(q, k, v, kernel, dilation, causal, rpb=rpb)
        outs[backend] = (out, torch.autograd.grad(out.square().sum(), rpb)[0])
    assert _rel_err(outs['torch'][0], outs['reference'][0]) < 1e-3
    assert _rel_err(outs['torch'][1], outs['reference'][1]) < 1e-3


def test_auto_backend_on_cuda_matches_reference():
    layer = ops.NeighborhoodAttention2D(64, 2, kernel_size=7, dilation=2).cuda().eval()
    x = torch.randn(2, 20, 24, 64, device='cuda')
    with torch.no_grad():
        auto = layer(x)
        with ops.use_backend('reference'):
            expected = layer(x)
    assert _rel_err(auto, expected) < 1e-3


@pytest.mark.parametrize('backend', ['torch', 'flex', 'auto'])
def test_bf16_activations_fp32_rpb_gradient(backend):
    """What autocast training does: bf16 q/k/v with the fp32 RPB parameter. The bias gradient sums
    B*N*k^2 terms into 169 entries per head; it must be accumulated in fp32 (a bf16 table gave 175 %
    relative error at this size on an H200)."""
    g = torch.Generator(device='cuda').manual_seed(0)
    shape = (16, 56, 56, 2, 32)
    base = [torch.randn(shape, device='cuda', generator=g).bfloat16() for _ in range(3)]
    rpb = torch.randn(2, 13, 13, device='cuda', generator=g) * 0.5
    grad_out = torch.randn(shape, device='cuda', generator=g)
    grads = {}
    for name, cast in ((backend, None), ('reference', torch.float64)):
        leaves = [t.to(cast) if cast else t for t in base]
        table = rpb.to(cast).requires_grad_() if cast else rpb.clone().requires_grad_()
        with ops.use_backend(name):
            out = ops.na2d(*leaves, 7, rpb=table)
        grads[name] = torch.autograd.grad(out, table, grad_out.to(out.dtype))[0]
    assert _rel_err(grads[backend], grads['reference']) < 2e-2
