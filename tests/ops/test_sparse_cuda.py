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


# A flip between two fp32 implementations needs a boundary gap below the sum of their rounding errors: twice the CPU
# path's measured error if the GPU kernel's were no larger, times 4 for what the CPU cannot measure (the kernel's
# exp2-based exp, its reciprocal, its summation order). On the DeiT-S inputs below the CPU errors are 2.0e-7
# (coefficients) and 4.6e-7 (scores, relative to the row's budget-th score), so rows within 1.6e-6 / 3.7e-6 of a
# boundary are near-ties: 0.74 % of the rows. The 1e-5 gap used before was 50x the rounding and left out 4.4 %.
NEAR_TIE_FACTOR = 8


def selection_margins(q_c, k_c, proj_n, basis, scale, topk, budget):
    """Per row of the predictor: the fp64 relative gaps at its two selection boundaries (the ``topk``-th against
    the next coefficient, the ``budget``-th against the next reconstructed score), and the largest relative error of
    the fp32 CPU coefficients and scores against fp64 (the rounding of one implementation).

    Returns ``(coef_gap, score_gap)`` ``[B, heads, Nq]`` and ``(coef_err, score_err)`` floats."""
    coef = ((q_c.double() @ (k_c.double().transpose(-1, -2) @ proj_n.double())) * scale).softmax(-1)
    coef32 = ((q_c @ (k_c.transpose(-1, -2) @ proj_n)) * scale).softmax(-1)
    ranked = coef.sort(-1, descending=True).values
    coef_gap = (ranked[..., topk - 1] - ranked[..., topk]) / ranked[..., topk - 1]
    kept = torch.zeros_like(coef).scatter(-1, coef.topk(topk, -1).indices, 1.)  # fp64's pick for both
    scores, scores32 = (coef * kept) @ basis.double(), (coef32 * kept.float()) @ basis
    ranked = scores.sort(-1, descending=True).values
    score_gap = (ranked[..., budget - 1] - ranked[..., budget]) / ranked[..., budget - 1]
    coef_err = ((coef32.double() - coef).abs() / coef).max().item()
    score_err = ((scores32.double() - scores).abs().amax(-1) / ranked[..., budget - 1]).max().item()
    return (coef_gap, score_gap), (coef_err, score_err)


@pytest.mark.parametrize('layout', ['indices', 'bitmask'])
def test_cuda_fused_connectivity_selects_the_cpu_keys(layout):
    """The same weights select the same keys on both devices on every row whose boundary gaps exceed
    ``NEAR_TIE_FACTOR`` times the measured fp32 rounding (near-ties: no tie, the implementations may round either
    way), and they must stay under 1 % of the rows; exact ties follow the tie rule on both (lower index wins)."""
    from attnzoo.ops import topk_connectivity
    args = deit_predictor_inputs()
    scale, topk, budget = 6 ** -0.5, 8, 50
    cpu = topk_connectivity(*args, scale, topk, budget, layout=layout)
    gpu = topk_connectivity(*(t.cuda() for t in args), scale, topk, budget, layout=layout).cpu()
    (coef_gap, score_gap), (coef_err, score_err) = selection_margins(*args, scale, topk, budget)
    near = (coef_gap <= NEAR_TIE_FACTOR * coef_err) | (score_gap <= NEAR_TIE_FACTOR * score_err)
    assert near.float().mean() < 0.01, (near.float().mean().item(), coef_err, score_err)
    differ = ~(gpu == cpu).all(-1)
    beyond = differ & ~near
    assert not beyond.any(), (f'{int(beyond.sum())} rows differ beyond the near-ties; their gaps '
                              f'{coef_gap[beyond].tolist()[:5]}, {score_gap[beyond].tolist()[:5]}')
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
