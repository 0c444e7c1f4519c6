"""Window attention: partition helpers, semantics against a loop-per-window Swin reference, backends, autograd."""
import pytest
import torch
import torch.nn.functional as F

import attnzoo.ops as ops
from attnzoo.ops.window import WindowAttention2D, pad_to_window, window_partition, window_reverse


def _qkv(B=2, H=9, W=11, heads=2, dim=4, dim_v=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, W, heads, d, generator=g, dtype=dtype) for d in (dim, dim, dim_v or dim))


def swin_loop(q, k, v, window, shift, mask_padding, scale):
    """Swin's recipe written out: pad, roll, an img_mask from slices, then every window on its own."""
    B, H, W, heads, _ = q.shape
    wh, ww = window
    sh, sw = shift
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    pad = lambda t: F.pad(t, (0, 0, 0, 0, 0, Wp - W, 0, Hp - H))  # noqa: E731
    q, k, v = pad(q), pad(k), pad(v)
    valid = torch.zeros(Hp, Wp, dtype=torch.bool)
    valid[:H, :W] = True
    region = torch.zeros(Hp, Wp, dtype=torch.long)
    if sh or sw:
        q, k, v = (torch.roll(t, (-sh, -sw), (1, 2)) for t in (q, k, v))
        valid = torch.roll(valid, (-sh, -sw), (0, 1))
        cnt = 0
        for hs in (slice(0, -wh), slice(-wh, -sh if sh else None), slice(-sh, None) if sh else slice(0, 0)):
            for ws in (slice(0, -ww), slice(-ww, -sw if sw else None), slice(-sw, None) if sw else slice(0, 0)):
                region[hs, ws] = cnt
                cnt += 1
    out = torch.zeros(B, Hp, Wp, heads, v.shape[-1], dtype=q.dtype)
    for y in range(0, Hp, wh):
        for x in range(0, Wp, ww):
            sl = (slice(None), slice(y, y + wh), slice(x, x + ww))
            r, ok = region[sl[1:]].flatten(), valid[sl[1:]].flatten()
            allowed = r[:, None] == r[None, :]
            if mask_padding:
                allowed &= ok[None, :] | ~ok[:, None]
            qw, kw, vw = (t[sl].flatten(1, 2).transpose(1, 2) for t in (q, k, v))  # [B, h, w*w, D]
            logits = (qw @ kw.transpose(-1, -2)) * scale
            attn = logits.masked_fill(~allowed, float('-inf')).softmax(-1)
            out[sl] = (attn @ vw).transpose(1, 2).reshape(B, wh, ww, heads, -1)
    if sh or sw:
        out = torch.roll(out, (sh, sw), (1, 2))
    return out[:, :H, :W]


def test_partition_reverse_round_trip():
    x = torch.randn(2, 6, 8, 5)
    windows = window_partition(x, (3, 4))
    assert windows.shape == (2 * 2 * 2, 3, 4, 5)
    torch.testing.assert_close(windows[1], x[0, 0:3, 4:8])  # row-major windows
    torch.testing.assert_close(window_reverse(windows, (3, 4), 6, 8), x)


def test_pad_to_window():
    x = torch.randn(1, 5, 7, 2, 3)
    padded, ph, pw = pad_to_window(x, (3, 4))
    assert (ph, pw) == (1, 1) and padded.shape == (1, 6, 8, 2, 3)
    assert padded[:, 5].abs().sum() == 0 and padded[:, :, 7].abs().sum() == 0


CASES = [
    # (H, W), window, shift, mask_padding
    ((6, 9), (3, 3), (0, 0), True),     # exact multiples: plain windows
    ((7, 10), (3, 4), (0, 0), False),   # zero-padded keys kept (logit 0)
    ((7, 10), (3, 4), (0, 0), True),    # padded keys masked
    ((6, 8), (3, 4), (1, 2), True),     # shifted windows with the region mask
    ((8, 9), (4, 3), (2, 1), True),     # shift + padding, masked
    ((8, 9), (4, 3), (2, 1), False),    # shift + padding, unmasked
]


@pytest.mark.parametrize('backend', ['torch', 'reference'])
@pytest.mark.parametrize('size, window, shift, mask_padding', CASES)
def test_matches_swin_loop(backend, size, window, shift, mask_padding):
    q, k, v = _qkv(H=size[0], W=size[1], dim_v=3)
    expected = swin_loop(q, k, v, window, shift, mask_padding, 0.7)
    with ops.use_backend(backend):
        out = ops.window_attention(q, k, v, window, shift, mask_padding=mask_padding, scale=0.7)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_autograd(backend):
    q, k, v = (t.requires_grad_() for t in _qkv(B=1, H=5, W=6, heads=1, dim=3))
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b, c: ops.window_attention(a, b, c, 3, 1), (q, k, v))


def test_backends_agree_on_gradients():
    q, k, v = _qkv(H=7, W=9, dtype=torch.float32)
    grads = []
    for backend in ('torch', 'reference'):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with ops.use_backend(backend):
            ops.window_attention(*leaves, (3, 4), (1, 2)).square().sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_mac_count_uses_padded_map():
    q, k, v = _qkv(B=2, H=7, W=10, heads=2, dim=4, dim_v=6)
    with ops.count_attention_macs() as counter:
        ops.window_attention(q, k, v, (3, 4))
    assert counter.macs == 2 * 2 * (9 * 12) * 12 * (4 + 6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(window_size=3, shift_size=3), 'shift_size must be smaller than window_size'),
    (dict(window_size=0), 'window_size must be an int >= 1'),
    (dict(window_size=(3, 3, 3)), 'window_size must be an int >= 1 or a pair'),
    (dict(window_size=3, dropout_p=1.0), r'dropout_p must be in \[0, 1\)'),
])
def test_bad_arguments(kwargs, match):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=match):
        ops.window_attention(q, k, v, **kwargs)


def test_bad_tensors_and_backend():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r'q must have 5 dims \[B, H, W, heads, head_dim\]'):
        ops.window_attention(q[0], k, v, 3)
    with pytest.raises(ValueError, match='v must match q'):
        ops.window_attention(q, k, v[:, :3], 3)
    with ops.use_backend('natten'), pytest.raises(ValueError, match="backend 'natten' is not implemented"):
        ops.window_attention(q, k, v, 3)


def test_module_pads_before_qkv():
    """L²ViT / Swin convention: the padded map goes through qkv (padded tokens carry the bias), no mask."""
    torch.manual_seed(0)
    layer = WindowAttention2D(8, 2, window_size=3).double().eval()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    xp = F.pad(x, (0, 0, 0, 2, 0, 1))
    q, k, v = layer.qkv(xp).reshape(2, 6, 9, 3, 2, 4).unbind(3)
    expected = layer.proj(swin_loop(q, k, v, (3, 3), (0, 0), False, 4 ** -0.5).reshape(2, 6, 9, 8)[:, :5, :7])
    torch.testing.assert_close(layer(x), expected)
    with pytest.raises(ValueError, match=r'expects \[B, H, W, C=8\]'):
        layer(x[..., :4])
