"""attnzoo.ops.topk_attention: torch gather path vs the dense-masked reference, autograd, errors, MACs."""
import pytest
import torch

from attnzoo.ops import count_attention_macs, topk_attention, use_backend
from attnzoo.ops.sparse import indices_to_mask, keep_budget, mask_to_indices


def qkv(B=2, H=3, N=17, D=8, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, N, D, generator=g, dtype=dtype, requires_grad=grad) for _ in range(3)]


def topk_idx(B, H, n, N, K, seed=1):
    return torch.rand(B, H, n, N, generator=torch.Generator().manual_seed(seed)).topk(K, -1).indices


@pytest.mark.parametrize('dense_rows,K', [(0, 5), (1, 5), (1, 17), (3, 1)])
def test_indices_forward_backward_match_reference(dense_rows, K):
    q, k, v = qkv(grad=True)
    idx = topk_idx(2, 3, 17 - dense_rows, 17, K)
    out = topk_attention(q, k, v, indices=idx, dense_rows=dense_rows)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    with use_backend('reference'):
        ref = topk_attention(q, k, v, indices=idx, dense_rows=dense_rows)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_reference_is_the_official_dense_masked_attention():
    q, k, v = qkv()
    idx = topk_idx(2, 3, 16, 17, 4)
    mask = indices_to_mask(idx, 17, dense_rows=1)
    logits = (q @ k.transpose(-1, -2)) * 8 ** -0.5
    expected = torch.nan_to_num(logits.masked_fill(~mask, float('-inf')).softmax(-1)) @ v
    with use_backend('reference'):
        torch.testing.assert_close(topk_attention(q, k, v, indices=idx, dense_rows=1), expected)
    torch.testing.assert_close(topk_attention(q, k, v, mask=mask), expected)


def test_mask_with_ragged_rows_and_empty_rows():
    q, k, v = qkv(grad=True)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 3, 17, 17, generator=g) < 0.3
    mask[0, 0, 4] = False  # a row without keys -> zeros
    out = topk_attention(q, k, v, mask=mask)
    with use_backend('reference'):
        ref = topk_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, ref)
    assert out[0, 0, 4].abs().max() == 0
    ga = torch.autograd.grad(out.sum(), q)[0]
    with use_backend('reference'):
        gb = torch.autograd.grad(topk_attention(q, k, v, mask=mask).sum(), q)[0]
    torch.testing.assert_close(ga, gb)
    idx, valid = mask_to_indices(mask)
    assert valid.sum() == mask.sum() and idx.shape[-1] == int(mask.sum(-1).max())


def test_float32_and_broadcast_indices():
    q, k, v = qkv(dtype=torch.float32)
    idx = topk_idx(1, 1, 17, 17, 6)
    out = topk_attention(q, k, v, indices=idx)
    with use_backend('reference'):
        ref = topk_attention(q, k, v, indices=idx.expand(2, 3, -1, -1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mac_count_falls_with_keep():
    q, k, v = qkv(B=1, H=2, N=10, D=4)
    with count_attention_macs() as c:
        topk_attention(q, k, v, indices=topk_idx(1, 2, 9, 10, 3), dense_rows=1)
    assert c.macs == 1 * 2 * (1 * 10 + 9 * 3) * 8
    assert keep_budget(0.25, 197) == 50 and keep_budget(1.0, 197) == 197


def test_named_errors():
    q, k, v = qkv()
    idx = topk_idx(2, 3, 17, 17, 4)
    with pytest.raises(ValueError, match='exactly one'):
        topk_attention(q, k, v)
    with pytest.raises(ValueError, match='exactly one'):
        topk_attention(q, k, v, indices=idx, mask=torch.ones(2, 3, 17, 17, dtype=torch.bool))
    with pytest.raises(ValueError, match='4 dims'):
        topk_attention(q[0], k, v, indices=idx)
    with pytest.raises(TypeError, match='one dtype'):
        topk_attention(q.float(), k, v, indices=idx)
    with pytest.raises(ValueError, match=r'lie in \[0, Nk=17\)'):
        topk_attention(q, k, v, indices=idx + 20)
    with pytest.raises(ValueError, match='Nq - dense_rows'):
        topk_attention(q, k, v, indices=idx, dense_rows=1)
    with pytest.raises(TypeError, match='int64/int32'):
        topk_attention(q, k, v, indices=idx.float())
    with pytest.raises(TypeError, match='bool'):
        topk_attention(q, k, v, mask=torch.ones(2, 3, 17, 17))
    with pytest.raises(ValueError, match='keep_rate'):
        keep_budget(0.0, 10)
    with pytest.raises(TypeError, match='check_indices must be a bool'):
        topk_attention(q, k, v, indices=idx, check_indices='no')
    # the caller vouches for its indices: no value check (and no device sync), the rest still checked
    out = topk_attention(q, k, v, indices=idx, check_indices=False)
    torch.testing.assert_close(out, topk_attention(q, k, v, indices=idx))


def test_repeated_indices_are_a_named_error_on_every_backend():
    q, k, v = qkv()
    idx = topk_idx(2, 3, 17, 17, 4)
    idx[1, 2, 5, 3] = idx[1, 2, 5, 0]  # one row selects a key twice
    for backend in ('reference', 'torch', 'auto'):
        with use_backend(backend), pytest.raises(ValueError, match='indices must hold distinct entries in every row, got 1 repeated'):
            topk_attention(q, k, v, indices=idx)


@pytest.mark.parametrize('backend', ['flex', 'natten', 'triton'])
def test_forced_backend_without_a_kernel_raises(backend):
    q, k, v = qkv()
    with use_backend(backend), pytest.raises(ValueError, match=f"topk_attention: backend '{backend}' is not "
                                                               "implemented for this op.*no fused kernel"):
        topk_attention(q, k, v, indices=topk_idx(2, 3, 17, 17, 4))
