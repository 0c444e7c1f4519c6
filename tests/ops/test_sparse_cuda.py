"""CUDA check of topk_attention against the dense-masked reference, forward and backward, fp32 and bf16: the
``torch`` gather path (GEMM + gathered logits, embedding_bag for attn @ v) and ``auto`` (the connectivity as a
boolean mask of one fused SDPA call); of the fused Triton predictor (``topk_connectivity``) against the CPU
selection of the same weights; and of the bitmask attention kernels (``connectivity_attention``, backend
``triton``) against ``reference``. Skipped without CUDA."""
import pytest
import torch

from attnzoo.ops import topk_attention, use_backend
from attnzoo.ops.sparse import indices_to_mask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize('K', [50, 99, 197])
@pytest.mark.parametrize('backend', ['torch', 'auto'])
def test_cuda_matches_reference(dtype, tol, K, backend):
    g = torch.Generator(device='cuda').manual_seed(0)
    q, k, v = [torch.randn(4, 6, 197, 64, device='cuda', generator=g, dtype=dtype, requires_grad=True)
               for _ in range(3)]
    idx = torch.rand(4, 6, 196, 197, device='cuda', generator=g).topk(K, -1).indices
    with use_backend(backend):
        out = topk_attention(q, k, v, indices=idx, dense_rows=1)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    with use_backend('reference'):
        ref = topk_attention(q, k, v, indices=idx, dense_rows=1)
    ref_grads = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.float(), b.float(), atol=tol * 10, rtol=tol * 10)


def test_cuda_model_sparse_matches_reference():
    import timm
    import attnzoo  # noqa: F401
    m = timm.create_model('sparsifiner_deit_small', keep_rate=0.25).cuda().eval()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with torch.no_grad():
        out = m(x)
        with use_backend('reference'):
            ref = m(x)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# topk_connectivity (fused Triton predictor) and connectivity_attention (bitmask kernels) on CUDA
# ---------------------------------------------------------------------------------------------------------------

def deit_predictor_inputs(B=4, seed=0):
    """DeiT-S predictor shapes (6 heads, 196 non-class queries, 197 keys, c = r = 32), official init scales."""
    g = torch.Generator().manual_seed(seed)
    q_c, k_c = torch.randn(B, 6, 196, 32, generator=g) * 0.06, torch.randn(B, 6, 197, 32, generator=g) * 0.06
    proj_n = torch.randn(197, 32, generator=g) * 0.02
    basis = (torch.randn(32, 197, generator=g) * 0.02).abs()
    return q_c, k_c, proj_n, basis.masked_fill(basis <= 2e-2, 0.)


def near_ties(q_c, k_c, proj_n, basis, scale, topk, budget, gap=1e-5):
    """Rows whose coefficient or score boundary lies within rounding of the next value (fp64)."""
    coef = ((q_c.double() @ (k_c.double().transpose(-1, -2) @ proj_n.double())) * scale).softmax(-1)
    c = coef.sort(-1, descending=True).values
    near = (c[..., topk - 1] - c[..., topk]) <= gap * c[..., topk - 1]
    top = coef.topk(topk, -1).indices
    s = (torch.zeros_like(coef).scatter(-1, top, coef.gather(-1, top)) @ basis.double()).sort(-1, descending=True)
    return near | ((s.values[..., budget - 1] - s.values[..., budget]) <= gap * s.values[..., budget - 1])


@pytest.mark.parametrize('layout', ['indices', 'bitmask'])
def test_cuda_fused_connectivity_selects_the_cpu_keys(layout):
    """The same weights select the same keys on both devices, exact ties included (the tie rule); rows whose
    boundary is within rounding (near-ties, no tie) are left out, and they must be rare."""
    from attnzoo.ops import topk_connectivity
    args = deit_predictor_inputs()
    scale, topk, budget = 6 ** -0.5, 8, 50
    cpu = topk_connectivity(*args, scale, topk, budget, layout=layout)
    gpu = topk_connectivity(*(t.cuda() for t in args), scale, topk, budget, layout=layout).cpu()
    near = near_ties(*args, scale, topk, budget)
    assert near.float().mean() < 0.01
    assert (gpu == cpu).all(-1)[~near].all()
    tied = [args[0] * 0, args[1], args[2], torch.randint(0, 3, (32, 197)).float()]  # every coefficient ties
    with use_backend('triton'):
        gpu_tied = topk_connectivity(*(t.cuda() for t in tied), scale, topk, budget, layout=layout).cpu()
    assert (gpu_tied == topk_connectivity(*tied, scale, topk, budget, layout=layout)).all()


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('clustered', [False, True])
def test_cuda_connectivity_attention_kernel_matches_reference(dtype, tol, clustered):
    from attnzoo.ops import connectivity_attention
    from attnzoo.ops.connectivity import mask_to_bitmask
    g = torch.Generator(device='cuda').manual_seed(0)
    qkv = torch.randn(4, 197, 3, 6, 64, device='cuda', generator=g).permute(2, 0, 3, 1, 4)
    if clustered:  # each query keeps 50 consecutive keys: most 32-key blocks are skipped
        start = torch.randint(0, 147, (4, 6, 196, 1), device='cuda', generator=g)
        keys = torch.arange(197, device='cuda')
        mask = (keys >= start) & (keys < start + 50)
    else:
        mask = indices_to_mask(torch.rand(4, 6, 196, 197, device='cuda', generator=g).topk(50, -1).indices, 197)
    bitmask = mask_to_bitmask(mask)
    grad_out = torch.randn(4, 6, 197, 64, device='cuda', generator=g)
    runs = {}
    for backend, cast in (('triton', dtype), ('reference', torch.float64)):
        x = qkv.to(cast).requires_grad_()
        with use_backend(backend):
            out = connectivity_attention(*x.unbind(0), bitmask, 50, dense_rows=1)
        runs[backend] = [out, *torch.autograd.grad(out, x, grad_out.to(out.dtype))]
    for a, b in zip(*runs.values()):
        assert ((a.double() - b).norm() / b.norm()).item() < tol
