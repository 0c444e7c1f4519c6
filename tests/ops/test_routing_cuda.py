"""CUDA backends of routing attention (flex, torch) against the official-gather reference. Skipped without a GPU."""
import pytest
import torch

import attnzoo.ops as ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

# biformer_small stage shapes at 224 (56/28/14 with 2/4/8 heads, top-k 1/4/16), a padded ADE20K-like map, non-square
CASES = [
    ((56, 56), 7, 1, 2),
    ((28, 28), 7, 4, 4),
    ((14, 14), 7, 16, 8),
    ((64, 64), 8, 4, 2),
    ((32, 48), (4, 6), 5, 4),
]


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize('spatial,regions,topk,heads', CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_flex_matches_reference_fwd_bwd(spatial, regions, topk, heads, dtype):
    g = torch.Generator(device='cuda').manual_seed(0)
    shape = (2, *spatial, heads, 32)
    base = [torch.randn(shape, device='cuda', generator=g) for _ in range(3)]
    grad_out = torch.randn(shape, device='cuda', generator=g)
    # one routing for both (a bf16 routing could flip near-ties): taken from the fp64 reference
    with ops.use_backend('reference'):
        _, idx = ops.routing_attention(*(t.double() for t in base), regions, topk, return_indices=True)
    results = {}
    for backend, cast in (('reference', torch.float64), ('flex', dtype)):
        leaves = [t.to(cast).requires_grad_() for t in base]
        with ops.use_backend(backend):
            out = ops.routing_attention(*leaves, regions, topk, routing=idx)
        results[backend] = (out, torch.autograd.grad(out, leaves, grad_out.to(cast)))
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    assert _rel_err(results['flex'][0], results['reference'][0]) < tol
    for g_flex, g_ref in zip(results['flex'][1], results['reference'][1]):
        assert torch.isfinite(g_flex.float()).all()
        assert _rel_err(g_flex, g_ref) < tol * 2


@pytest.mark.parametrize('spatial,regions,topk,heads', CASES)
def test_flex_and_torch_route_like_reference(spatial, regions, topk, heads):
    g = torch.Generator(device='cuda').manual_seed(1)
    q, k, v = (torch.randn(2, *spatial, heads, 32, device='cuda', generator=g, dtype=torch.float64)
               for _ in range(3))
    with ops.use_backend('reference'):
        expected, idx = ops.routing_attention(q, k, v, regions, topk, return_indices=True)
    for backend in ('torch', 'flex'):
        with ops.use_backend(backend):
            out, idx_b = ops.routing_attention(q.float(), k.float(), v.float(), regions, topk, routing=idx,
                                               return_indices=True)
        assert torch.equal(idx_b, idx)
        assert _rel_err(out, expected) < 1e-3, backend


def test_biformer_model_on_cuda_auto_matches_reference():
    import timm
    import attnzoo  # noqa: F401
    model = timm.create_model('biformer_tiny', embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1)).cuda().eval()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with torch.no_grad():
        auto = model.double()(x.double())
        with ops.use_backend('reference'):
            expected = model(x.double())
    assert _rel_err(auto, expected) < 1e-6
