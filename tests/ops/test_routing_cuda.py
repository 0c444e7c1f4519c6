"""CUDA backends of routing attention (flex, triton, torch) against the official-gather reference, the backend
``auto`` picks, and the BiFormer models under the fused kernels. Skipped without a GPU."""
import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops import routing as R

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
@pytest.mark.parametrize('backend', ['flex', 'triton'])
def test_fused_backends_match_reference_fwd_bwd(spatial, regions, topk, heads, dtype, backend):
    g = torch.Generator(device='cuda').manual_seed(0)
    shape = (2, *spatial, heads, 32)
    base = [torch.randn(shape, device='cuda', generator=g) for _ in range(3)]
    grad_out = torch.randn(shape, device='cuda', generator=g)
    # one routing for both (a bf16 routing could flip near-ties): taken from the fp64 reference
    with ops.use_backend('reference'):
        _, idx = ops.routing_attention(*(t.double() for t in base), regions, topk, return_indices=True)
    results = {}
    for name, cast in (('reference', torch.float64), (backend, dtype)):
        leaves = [t.to(cast).requires_grad_() for t in base]
        with ops.use_backend(name):
            out = ops.routing_attention(*leaves, regions, topk, routing=idx)
        results[name] = (out, torch.autograd.grad(out, leaves, grad_out.to(cast)))
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    assert _rel_err(results[backend][0], results['reference'][0]) < tol
    for g_fused, g_ref in zip(results[backend][1], results['reference'][1]):
        assert torch.isfinite(g_fused.float()).all()
        assert _rel_err(g_fused, g_ref) < tol * 2


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


# The fused Triton kernels beyond the stage shapes: (B, H, W, heads, Dk, Dv, regions, topk, qkv view). Odd maps,
# 1x1 / 2x2 / 7x7 / 14x14 / 13x19-token regions (the last two in chunks), topk 1 and topk == R (the op sends
# topk == R to SDPA, so those run the kernels directly), head dims 16 to 128, q/k/v as views of one qkv tensor.
KERNEL_CASES = [
    (2, 9, 8, 2, 16, 16, (3, 4), 5, True),
    (1, 7, 7, 4, 32, 32, (7, 7), 49, False),
    (2, 14, 14, 8, 32, 32, (7, 7), 16, True),
    (2, 56, 56, 2, 48, 48, (4, 4), 1, False),
    (2, 64, 64, 2, 128, 128, (8, 8), 4, True),
    (3, 21, 14, 2, 64, 32, (3, 2), 6, False),
    (1, 208, 304, 1, 32, 32, (16, 16), 4, True),
]


def _kernel_case_tensors(case, g):
    B, H, W, heads, dk, dv, _, _, view = case
    if view:
        return [torch.randn(B, H, W, 3, heads, dk, device='cuda', generator=g)]
    return [torch.randn(B, H, W, heads, d, device='cuda', generator=g) for d in (dk, dk, dv)]


@pytest.mark.parametrize('case', KERNEL_CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_triton_kernels_match_reference_fwd_bwd(case, dtype):
    from attnzoo.ops import _routing_triton as kernels
    B, H, W, heads, dk, dv, (sh, sw), topk, view = case
    g = torch.Generator(device='cuda').manual_seed(0)
    base = _kernel_case_tensors(case, g)
    grad_out = torch.randn(B, H, W, heads, dv, device='cuda', generator=g)
    scale = (heads * dk) ** -0.5
    q, k = (base[0].unbind(3) if view else base)[:2]
    idx = R._route(q.double(), k.double(), sh, sw, topk, scale)
    results = {}
    for name, cast in (('reference', torch.float64), ('triton', dtype)):
        leaves = [t.to(cast).requires_grad_() for t in base]
        q, k, v = leaves[0].unbind(3) if view else leaves
        if name == 'triton' and topk == sh * sw:
            out, lse = kernels.routing_forward(q, k, v, idx, sh, sw, scale)
            grads = kernels.routing_backward(grad_out.to(cast), q, k, v, out, lse, idx, sh, sw, scale)
        else:
            with ops.use_backend(name):
                out = ops.routing_attention(q, k, v, (sh, sw), topk, routing=idx)
            grads = torch.autograd.grad(out, (q, k, v), grad_out.to(cast))
        results[name] = [out, *grads]
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for fused, ref in zip(results['triton'], results['reference']):
        assert torch.isfinite(fused.float()).all()
        assert _rel_err(fused, ref) < tol


def test_auto_picks_the_first_supported_backend_of_the_cuda_order():
    q = torch.empty(2, 28, 28, 4, 32, device='cuda')
    wide = torch.empty(2, 28, 28, 1, 160, device='cuda')
    trained = q.clone().requires_grad_()
    assert R._select_backend(q, q, q, 'routing_attention') == 'triton'  # measured: inference
    assert R._select_backend(trained, q, q, 'routing_attention') == 'torch'  # measured: training
    assert R._select_backend(wide, wide, wide, 'routing_attention') == 'torch'  # head_dim 160: not the kernels'
    assert R._select_backend(q.cpu(), q.cpu(), q.cpu(), 'routing_attention') == 'torch'


def test_triton_layer_compiles_without_graph_breaks():
    """BiFormer's attention layer on the fused kernels is one graph under torch.compile (a custom op), with the
    eager output and input gradient."""
    from attnzoo.models.biformer import BiLevelRoutingAttention
    layer = BiLevelRoutingAttention(128, 4, num_regions=7, topk=4).cuda()
    x = torch.randn(2, 30, 30, 128, device='cuda', requires_grad=True)  # padded to 35x35 inside
    with ops.use_backend('triton'):
        explained = torch._dynamo.explain(layer)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        eager = layer(x)
        (eager_grad,) = torch.autograd.grad(eager.square().sum(), x)
        compiled = torch.compile(layer)(x)
        (compiled_grad,) = torch.autograd.grad(compiled.square().sum(), x)
    assert _rel_err(compiled, eager) < 1e-5
    assert _rel_err(compiled_grad, eager_grad) < 1e-5


@pytest.mark.parametrize('side,heads,topk', [(56, 2, 1), (28, 4, 4), (14, 8, 16)])
def test_triton_peak_memory_at_most_the_torch_path(side, heads, topk):
    """Forward + backward at the biformer_small stage shapes (B=16, bf16): no K/V gather, no mask."""
    g = torch.Generator(device='cuda').manual_seed(0)
    shape = (16, side, side, heads, 32)
    q, k, v = (torch.randn(shape, device='cuda', generator=g, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn(shape, device='cuda', generator=g, dtype=torch.bfloat16)
    idx = R._route(q, k, 7, 7, topk, (heads * 32) ** -0.5)
    peaks = {}
    for backend in ('torch', 'triton'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with ops.use_backend(backend):
            out = ops.routing_attention(q, k, v, 7, topk, routing=idx)
        torch.autograd.grad(out, (q, k, v), grad_out)
        del out
        torch.cuda.synchronize()
        peaks[backend] = torch.cuda.max_memory_allocated() - base
    assert peaks['triton'] <= peaks['torch'], peaks


@pytest.mark.parametrize('name,size', [('biformer_tiny', 224), ('biformer_small', 224), ('biformer_tiny', 256),
                                       ('biformer_stl_nchw', 200)])
def test_biformer_models_under_triton_match_reference(name, size):
    """Whole models in fp32 (eval): output within 1e-4 relative, input gradient within 1e-3 of ``reference``. 256 px
    auto-pads the 16x16 stage-3 map to 21x21; 200 px runs the nchw layout's padded q/k/v with a given routing."""
    import timm
    import attnzoo  # noqa: F401
    torch.manual_seed(0)
    model = timm.create_model(name).cuda().eval()
    x = torch.randn(2, 3, size, size, device='cuda')
    grad_out = torch.randn(2, model.num_classes, device='cuda')
    results = {}
    for backend in ('reference', 'triton'):
        inp = x.clone().requires_grad_()
        with ops.use_backend(backend):
            out = model(inp)
        results[backend] = (out, torch.autograd.grad(out, inp, grad_out)[0])
    assert _rel_err(results['triton'][0], results['reference'][0]) < 1e-4
    assert _rel_err(results['triton'][1], results['reference'][1]) < 1e-3
