"""FaViT factorized attention: the factorization against loops and against the official module recipe, the size
limit, the shared-key attention, autograd and the FaSA layer."""
import pytest
import torch
from torch import nn

import attnzoo.ops as ops
from attnzoo.ops.factorized import FactorizedSelfAttention, factorized_min_size


def reflect(i: int, n: int) -> int:
    return i if i < n else 2 * (n - 1) - i


def loop_factorize(x, heads, w, d):
    """Point p of tile t reads x[reflect(ty*s + py*d), reflect(tx*s + px*d)]; per head, the (tile, channel)
    sequence is cut into C/heads equal runs, each averaged (the official AdaptiveAvgPool2d)."""
    B, C, H, W = x.shape
    s = d * (w - 1) + 1
    nty, ntx = -(-H // s), -(-W // s)
    cph = C // heads
    out = torch.zeros(B, heads, w * w, cph, dtype=x.dtype)
    for b in range(B):
        for h in range(heads):
            for py in range(w):
                for px in range(w):
                    seq = [x[b, h * cph + c, reflect(ty * s + py * d, H), reflect(tx * s + px * d, W)]
                           for ty in range(nty) for tx in range(ntx) for c in range(cph)]
                    L = nty * ntx
                    for j in range(cph):
                        out[b, h, py * w + px, j] = torch.stack(seq[j * L:(j + 1) * L]).mean()
    return out


def official_recipe(x, heads, w, d):
    """The official module sequence: ReflectionPad2d -> Unfold -> reshape/permute -> AdaptiveAvgPool2d."""
    B, C, H, W = x.shape
    s = d * (w - 1) + 1
    x = nn.ReflectionPad2d((0, (s - W % s) % s, 0, (s - H % s) % s))(x)
    x = nn.Unfold(kernel_size=w, stride=s, dilation=d)(x)
    x = x.reshape(B, heads, C // heads, w * w, -1).permute(0, 1, 3, 4, 2).reshape(B, heads, w * w, -1)
    return nn.AdaptiveAvgPool2d((None, C // heads))(x)


@pytest.mark.parametrize('size, heads, w, d', [
    ((7, 7), 1, 7, 1), ((9, 12), 2, 3, 1), ((10, 13), 2, 3, 2), ((14, 11), 1, 3, 4), ((5, 6), 3, 2, 3),
])
def test_factorize_windows_matches_loop_and_official_recipe(size, heads, w, d):
    x = torch.randn(2, 6, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ops.factorize_windows(x, heads, w, d)
    assert out.shape == (2, heads, w * w, 6 // heads)
    torch.testing.assert_close(out, loop_factorize(x, heads, w, d))
    torch.testing.assert_close(out, official_recipe(x, heads, w, d))


def test_cross_tile_pool_is_not_a_per_channel_mean():
    x = torch.randn(1, 4, 14, 14, dtype=torch.float64)
    out = ops.factorize_windows(x, 1, 7, 1)
    per_channel = x.view(1, 4, 2, 7, 2, 7).mean((2, 4)).flatten(2).transpose(1, 2)[None]
    assert not torch.allclose(out, per_channel)


def test_min_size_and_named_error():
    assert factorized_min_size(7, 8) == 25 and factorized_min_size(7, 1) == 4
    ops.factorize_windows(torch.randn(1, 2, 25, 30), 1, 7, 8)
    with pytest.raises(ValueError, match=r'a 24x30 map is too small for window 7 with dilation 8.*>= 25'):
        ops.factorize_windows(torch.randn(1, 2, 24, 30), 1, 7, 8)
    with pytest.raises(ValueError, match='divisible by num_heads'):
        ops.factorize_windows(torch.randn(1, 3, 25, 30), 2, 7, 1)


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_factorized_attention(backend):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    expected = ((q @ k.transpose(-1, -2)) * 0.3).softmax(-1) @ v
    with ops.use_backend(backend), ops.count_attention_macs() as counter:
        torch.testing.assert_close(ops.factorized_attention(q, k, v, scale=0.3), expected)
        assert torch.autograd.gradcheck(lambda a, b, c: ops.factorized_attention(a, b, c), (q, k, v))
    assert counter.macs >= 2 * 3 * 20 * 9 * (4 + 5)
    with pytest.raises(ValueError, match='v must match k'):
        ops.factorized_attention(q, k, v[:, :, :4])


def test_factorize_windows_autograd():
    x = torch.randn(1, 4, 9, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.factorize_windows(t, 2, 3, 2), (x,))


@pytest.mark.parametrize('sr_ratio, groups', [(4, [4, 14, 14]), (1, [4, 28])])
def test_fasa_layer(sr_ratio, groups):
    torch.manual_seed(0)
    layer = FactorizedSelfAttention(32, 2, sr_ratio)
    assert layer.group_dims == groups
    assert layer.min_size == (13 if sr_ratio == 4 else 4)
    x = torch.randn(2, 30, 27, 32)
    out = layer(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    with pytest.raises(ValueError, match='too small'):
        layer(torch.randn(1, 3, 3, 32))
    with pytest.raises(ValueError, match='must be a multiple of'):
        FactorizedSelfAttention(24, 1, 2)
