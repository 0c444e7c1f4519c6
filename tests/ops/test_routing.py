"""Bi-level routing attention: backends against the official-gather reference, routing semantics, errors, MACs."""
import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops import routing as R

# (H, W, num_regions, topk, heads, head_dim): BiFormer's 224 px stage shapes (narrowed), a non-square grid,
# a global (topk == R) case and the single-region stage-4 form
CASES = [
    (56, 56, 7, 1, 2, 8),
    (28, 28, 7, 4, 2, 8),
    (14, 14, 7, 16, 3, 8),
    (12, 20, (3, 5), 6, 2, 4),
    (8, 8, 2, 4, 2, 4),
    (7, 7, 1, 1, 4, 8),
]


def qkv(H, W, heads, dim, batch=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, H, W, heads, dim, generator=g, dtype=dtype) for _ in range(3)]


def loop_definition(q, k, v, sh, sw, topk, scale):
    """Token by token: the routed region set from region means, softmax over its tokens."""
    B, H, W, h, D = q.shape
    rh, rw = H // sh, W // sw
    out = torch.empty_like(v)
    for b in range(B):
        q_r = q[b].reshape(sh, rh, sw, rw, h * D).mean((1, 3)).reshape(-1, h * D)
        k_r = k[b].reshape(sh, rh, sw, rw, h * D).mean((1, 3)).reshape(-1, h * D)
        routes = torch.topk((q_r * scale) @ k_r.T, topk, -1).indices
        for i in range(H):
            for j in range(W):
                region = (i // rh) * sw + j // rw
                keys = [(y, x) for r in routes[region].tolist() for y in range((r // sw) * rh, (r // sw + 1) * rh)
                        for x in range((r % sw) * rw, (r % sw + 1) * rw)]
                ys, xs = torch.tensor([p[0] for p in keys]), torch.tensor([p[1] for p in keys])
                logits = torch.einsum('hd,nhd->hn', q[b, i, j], k[b, ys, xs]) * scale
                out[b, i, j] = torch.einsum('hn,nhd->hd', logits.softmax(-1), v[b, ys, xs])
    return out


def test_reference_matches_loop_definition():
    q, k, v = qkv(8, 12, 2, 4, batch=1)
    expected = loop_definition(q, k, v, 2, 3, 2, (2 * 4) ** -0.5)
    with ops.use_backend('reference'):
        torch.testing.assert_close(ops.routing_attention(q, k, v, (2, 3), 2), expected)


@pytest.mark.parametrize('case', CASES)
def test_torch_backend_matches_reference_fwd_bwd(case):
    H, W, S, topk, heads, dim = case
    leaves = [t.requires_grad_() for t in qkv(H, W, heads, dim)]
    grad_out = torch.randn(2, H, W, heads, dim, dtype=torch.float64)
    results = {}
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            out, idx = ops.routing_attention(*leaves, S, topk, return_indices=True)
        results[backend] = (out, idx, torch.autograd.grad(out, leaves, grad_out))
    torch.testing.assert_close(results['torch'][0], results['reference'][0])
    assert torch.equal(results['torch'][1], results['reference'][1])
    for a, b in zip(results['torch'][2], results['reference'][2]):
        torch.testing.assert_close(a, b)


@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
@pytest.mark.parametrize('case', CASES[:4])
def test_flex_path_eager_matches_reference(case):
    """The flex code path (block mask + mask_mod) in flex's eager CPU mode; forward only (no CPU backward)."""
    H, W, S, topk, heads, dim = case
    q, k, v = qkv(H, W, heads, dim)
    sh, sw = R._pair(S, 'num_regions')
    scale = (heads * dim) ** -0.5
    idx = R._route(q, k, sh, sw, topk, scale)
    out = R._routing_flex(q, k, v, idx, sh, sw, scale, compiled=False)
    with ops.use_backend('reference'):
        torch.testing.assert_close(out, ops.routing_attention(q, k, v, S, topk))


@pytest.mark.parametrize('regions, tokens, topk', [(49, 64, 1), (49, 16, 4), (49, 4, 16), (12, 48, 5), (6, 256, 2)])
def test_flex_block_mask_covers_exactly_the_routing(regions, tokens, topk):
    """Every routed token pair is in a present block; full blocks hold only routed pairs; absent blocks none."""
    g = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.stack([torch.randperm(regions, generator=g)[:topk] for _ in range(regions)])
                       for _ in range(2)])
    mask = R.flex_routing_block_mask(idx, regions, tokens, block_size=128)
    routed = R._routed_mask(idx, regions)
    n = regions * tokens
    token_region = torch.arange(n) // tokens
    dense = routed[:, token_region][:, :, token_region]  # [B, N, N]
    nb = -(-n // 128)
    padded = torch.zeros(2, nb * 128, nb * 128, dtype=torch.bool)
    padded[:, :n, :n] = dense
    per_block = padded.reshape(2, nb, 128, nb, 128).sum((2, 4))
    present = mask.to_dense()[:, 0].bool()  # partial or full
    assert (present | (per_block == 0)).all(), 'a block with routed pairs is missing'
    assert (per_block[present] > 0).all(), 'a block without routed pairs is present'
    full = torch.zeros_like(present)
    for b in range(2):
        for i in range(nb):
            full[b, i, mask.full_kv_indices[b, 0, i, :mask.full_kv_num_blocks[b, 0, i]].long()] = True
    sizes = torch.tensor([min(128, n - 128 * i) for i in range(nb)])
    assert torch.equal(full, per_block == sizes[:, None] * sizes[None, :])


def test_routing_is_per_image_shared_by_heads_and_detached():
    q, k, v = qkv(14, 14, 4, 8)
    q.requires_grad_()
    k.requires_grad_()
    idx = ops.region_routing(q, k, 7, 3)
    assert idx.shape == (2, 49, 3) and not idx.requires_grad
    # permuting heads (same full-channel vectors up to order) keeps the routing of a head-shared graph
    perm = torch.randperm(4)
    assert torch.equal(ops.region_routing(q[..., perm, :], k[..., perm, :], 7, 3), idx)
    # no gradient flows through the routing: the op's gradient equals that with the routing held fixed
    out, idx = ops.routing_attention(q, k, v, 7, 3, return_indices=True)
    g1 = torch.autograd.grad(out.sum(), (q, k))
    fixed = ops.routing_attention(q, k, v, 7, 3, routing=idx)
    g2 = torch.autograd.grad(fixed.sum(), (q, k))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_scale_default_is_full_channel_count():
    q, k, v = qkv(14, 14, 4, 8)
    torch.testing.assert_close(ops.routing_attention(q, k, v, 7, 4),
                               ops.routing_attention(q, k, v, 7, 4, scale=32 ** -0.5))
    assert not torch.allclose(ops.routing_attention(q, k, v, 7, 4), ops.routing_attention(q, k, v, 7, 4, scale=8 ** -0.5))


def test_topk_all_regions_is_global_attention():
    q, k, v = qkv(6, 6, 2, 4)
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(t.reshape(2, 36, 2, 4).transpose(1, 2) for t in (q, k, v)), scale=0.3).transpose(1, 2).reshape(q.shape)
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            torch.testing.assert_close(ops.routing_attention(q, k, v, 3, 9, scale=0.3), expected)
            torch.testing.assert_close(ops.routing_attention(q, k, v, 1, 1, scale=0.3), expected)


def test_different_value_dim_and_dtypes():
    q, k, _ = qkv(8, 8, 2, 4, dtype=torch.float32)
    v = torch.randn(2, 8, 8, 2, 6)
    assert ops.routing_attention(q, k, v, 4, 3).shape == (2, 8, 8, 2, 6)
    assert ops.routing_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 4, 3).dtype == torch.bfloat16


def test_attention_macs_follow_the_official_fvcore_count():
    q, k, v = qkv(28, 28, 4, 8, batch=3)
    with ops.count_attention_macs() as counter:
        ops.routing_attention(q, k, v, 7, 4)
    tokens_per_region = 16
    assert counter.macs == 3 * 49 * 49 * 32 + 3 * 784 * 4 * tokens_per_region * 4 * (8 + 8)
    with ops.count_attention_macs() as counter:
        ops.routing_attention(q, k, v, 1, 1)  # global: no routing product
    assert counter.macs == 3 * 784 * 784 * 32 * 2


@pytest.mark.parametrize('kwargs, exc, match', [
    (dict(num_regions=5, topk=1), ValueError, r'map \(28x28\) must be divisible by num_regions=5'),
    (dict(num_regions=7, topk=50), ValueError, r'topk must be an int in \[1, num_regions\*\*2 = 49\], got 50'),
    (dict(num_regions=7, topk=0), ValueError, r'topk must be an int in \[1, num_regions\*\*2 = 49\]'),
    (dict(num_regions=(7, 7, 7), topk=1), TypeError, 'num_regions must be an int or a pair'),
    (dict(num_regions=0, topk=1), ValueError, r'num_regions must be >= 1'),
])
def test_named_errors(kwargs, exc, match):
    q, k, v = qkv(28, 28, 2, 4)
    with pytest.raises(exc, match=match):
        ops.routing_attention(q, k, v, **kwargs)


def test_bad_shapes_raise():
    q, k, v = qkv(28, 28, 2, 4)
    with pytest.raises(ValueError, match=r'q must have 5 dims \[B, H, W, heads, head_dim\]'):
        ops.routing_attention(q[0], k, v, 7, 1)
    with pytest.raises(ValueError, match='k must have the shape of q'):
        ops.routing_attention(q, k[:, :14], v, 7, 1)
    with pytest.raises(ValueError, match='v must match q on every dim but head_dim'):
        ops.routing_attention(q, k, v[:, :, :, :1], 7, 1)
    with pytest.raises(TypeError, match='share one dtype'):
        ops.routing_attention(q, k.float(), v, 7, 1)
    with pytest.raises(ValueError, match=r'routing must have shape \[B, R, topk\] = \(2, 49, 2\)'):
        ops.routing_attention(q, k, v, 7, 2, routing=torch.zeros(2, 49, 3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="backend 'flex' runs on CUDA tensors only"), ops.use_backend('flex'):
        ops.routing_attention(q, k, v, 7, 1)


@pytest.mark.parametrize('backend', ['reference', 'torch', 'auto'])
def test_precomputed_routing_is_checked_up_front(backend):
    q, k, v = qkv(28, 28, 2, 4)
    good = torch.arange(2).expand(2, 49, 2).clone()
    cases = [
        (TypeError, 'routing must be an int64 tensor, got list', good.tolist()),
        (TypeError, 'routing must be an int64 tensor, got torch.int32', good.int()),
        (ValueError, r'routing must lie in \[0, R=49\), got values in \[0, 49\]', good + torch.tensor([0, 48])),
        (ValueError, r'routing must lie in \[0, R=49\), got values in \[-1, 1\]', good - torch.tensor([1, 0])),
        (ValueError, 'routing must hold distinct entries in every row, got 1 repeated', good.index_put(
            (torch.tensor([1]), torch.tensor([3]), torch.tensor([1])), torch.tensor([0]))),
    ]
    with ops.use_backend(backend):
        for error, match, routing in cases:
            with pytest.raises(error, match=match):
                ops.routing_attention(q, k, v, 7, 2, routing=routing)
        with pytest.raises(TypeError, match='check_routing must be a bool'):
            ops.routing_attention(q, k, v, 7, 2, routing=good, check_routing=1)
        ops.routing_attention(q, k, v, 7, 2, routing=good)


def test_auto_on_cuda_runs_triton_for_inference_and_torch_for_training(monkeypatch):
    """The measured CUDA policy, walked on CPU tensors with the kernels made available (no GPU needed): inference
    (no input requires grad, or grad mode off) -> 'triton'; training -> 'torch'; inputs the kernels cannot take ->
    'torch'; and the CPU itself always 'torch'."""
    monkeypatch.setattr(R, 'triton_available', lambda: True)
    monkeypatch.setattr(R, '_triton_interpreted', lambda: True)  # the kernels' device check passes on the CPU
    q = torch.zeros(2, 28, 28, 4, 32)
    trained = q.clone().requires_grad_()
    assert R._auto_cuda_backend(q, q, q) == 'triton'
    assert R._auto_cuda_backend(q, q, trained) == 'torch'
    with torch.no_grad():
        assert R._auto_cuda_backend(trained, trained, trained) == 'triton'
    wide = torch.zeros(2, 28, 28, 1, 160)  # head_dim above the kernels' 128
    assert R._auto_cuda_backend(wide, wide, wide) == 'torch'
    assert R._auto_cuda_backend(q.double(), q.double(), q.double()) == 'torch'  # no fp64 kernels
    assert R._auto_backend(q, q, q) == 'torch'  # CPU tensors
    monkeypatch.setattr(R, 'triton_available', lambda: False)
    assert R._auto_cuda_backend(q, q, q) == 'torch'
