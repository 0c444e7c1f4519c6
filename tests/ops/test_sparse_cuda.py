"""CUDA check of topk_attention against the dense-masked reference, forward and backward, fp32 and bf16: the
``torch`` gather path (GEMM + gathered logits, embedding_bag for attn @ v) and ``auto`` (the connectivity as a
boolean mask of one fused SDPA call); skipped without CUDA."""
import pytest
import torch

from attnzoo.ops import topk_attention, use_backend

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
