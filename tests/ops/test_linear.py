"""L²ViT linear attention: the formula per token, clamp, numerator-only temperature, backends, autograd."""
import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops.linear import LinearAttention


def _qkv(B=2, heads=3, N=10, dim=4, dim_v=5, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, heads, N, d, generator=g, dtype=torch.float64) * scale for d in (dim, dim, dim_v))


def loop_reference(q, k, v, temperature, clamp_min):
    """out_i = t * sum_j (relu(q_i).relu(k_j)) v_j / max(relu(q_i).sum_j relu(k_j), clamp_min), token by token."""
    B, H, N, _ = q.shape
    out = torch.zeros(B, H, N, v.shape[-1], dtype=q.dtype)
    t = torch.as_tensor(temperature, dtype=q.dtype).expand(H, 1, 1) if not isinstance(temperature, float) else None
    for b in range(B):
        for h in range(H):
            qr, kr = q[b, h].relu(), k[b, h].relu()
            for i in range(N):
                weights = torch.stack([qr[i] @ kr[j] for j in range(N)])
                denom = max((qr[i] @ kr.sum(0)).item(), clamp_min)
                temp = temperature if t is None else t[h, 0, 0]
                out[b, h, i] = temp * (weights[:, None] * v[b, h]).sum(0) / denom
    return out


@pytest.mark.parametrize('backend', ['torch', 'reference'])
@pytest.mark.parametrize('scale, clamp_min', [(1.0, 100.0), (3.0, 1.0), (3.0, 100.0)])
def test_matches_loop(backend, scale, clamp_min):
    q, k, v = _qkv(scale=scale)
    temperature = torch.tensor([0.5, 1.5, -2.0], dtype=torch.float64).view(3, 1, 1)
    expected = loop_reference(q, k, v, temperature, clamp_min)
    with ops.use_backend(backend):
        out = ops.linear_attention(q, k, v, temperature, clamp_min)
    torch.testing.assert_close(out, expected)


def test_clamp_and_temperature_semantics():
    q, k, v = _qkv(scale=0.1)  # relu(q).sum relu(k) << 100: the denominator is the clamp
    unnormalised = (q.relu() @ k.relu().transpose(-1, -2)) @ v
    torch.testing.assert_close(ops.linear_attention(q, k, v, 2.0), 2.0 * unnormalised / 100.0)
    q, k, v = _qkv(scale=10.0)  # large: a normalised average times the temperature (numerator only)
    a, b = ops.linear_attention(q, k, v, 1.0, clamp_min=1e-6), ops.linear_attention(q, k, v, 3.0, clamp_min=1e-6)
    torch.testing.assert_close(b, 3.0 * a)
    weights = q.relu() @ k.relu().transpose(-1, -2)
    rows = weights.sum(-1) > 1e-3  # queries with all-negative features have no weights at all
    expected = (weights / weights.sum(-1, keepdim=True).clamp(min=1e-3)) @ v
    torch.testing.assert_close(a[rows], expected[rows])


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_autograd(backend):
    q, k, v = (t.requires_grad_() for t in _qkv(B=1, heads=2, N=6, dim=3, dim_v=2, scale=5.0))
    temperature = torch.tensor([0.7, 1.3], dtype=torch.float64).view(2, 1, 1).requires_grad_()
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b, c, t: ops.linear_attention(a, b, c, t, 10.0), (q, k, v, temperature))


def test_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r'q must have 4 dims \[B, heads, N, head_dim\]'):
        ops.linear_attention(q[0], k, v)
    with pytest.raises(ValueError, match='temperature must broadcast'):
        ops.linear_attention(q, k, v, torch.ones(4, 1, 1))
    with pytest.raises(ValueError, match='clamp_min must be > 0'):
        ops.linear_attention(q, k, v, clamp_min=0.0)
    with ops.use_backend('flex'), pytest.raises(ValueError, match="backend 'flex' is not implemented"):
        ops.linear_attention(q, k, v)


def test_module():
    torch.manual_seed(0)
    layer = LinearAttention(12, 3).double()
    assert layer.temperature.shape == (3, 1, 1) and torch.all(layer.temperature == 4 ** -0.5)
    x = torch.randn(2, 7, 12, dtype=torch.float64) * 5
    q, k, v = layer.qkv(x).reshape(2, 7, 3, 3, 4).permute(2, 0, 3, 1, 4)
    expected = layer.proj(loop_reference(q, k, v, layer.temperature.detach(), 100.0).transpose(1, 2).reshape(2, 7, 12))
    torch.testing.assert_close(layer(x), expected)
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
