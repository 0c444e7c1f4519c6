"""Non-overlapping (optionally shifted) window attention, plus the window helpers every windowed model shares.

Semantics (Swin / L²ViT), per map of size ``H x W`` and window ``wh x ww``:

* The map is zero-padded right/bottom to multiples of the window (``Hp x Wp``) and cut into
  ``(Hp/wh) * (Wp/ww)`` windows in row-major order; every query attends to the keys of its own window.
* ``shift_size`` ``(sh, sw)``: the padded map is cyclically shifted by ``(-sh, -sw)`` before partitioning
  and shifted back afterwards; pairs that come from different regions of the shifted map (Swin's
  three-slices-per-axis labelling) are masked.
* Padding: ``mask_padding=True`` masks the padded keys (queries of real tokens never see them);
  ``False`` keeps them as zero keys/values (logit 0), which is what the models get when they pad the
  *input of the qkv projection* instead (L²ViT, Swin: there the padded tokens carry the qkv bias, so
  layers pad before ``qkv`` and call this op on maps that are already multiples of the window).

Non-finite keys (``attnzoo.ops._nonfinite``): a key whose k or v holds a NaN or an infinity makes the whole output
of the queries of its window (and Swin region) NaN, and no other. The paths that attend through a mask (the
region mask of shifted windows, the padding mask, and the dense ``reference`` path) zero such keys first and set
their queries' outputs to NaN after; plain windows need nothing, as every query of a window attends to all of it.

Tensor layout of the functional op: ``[B, H, W, heads, head_dim]`` (the heads-last layout of ``na2d``).
``window_partition`` / ``window_reverse`` work on channels-last maps ``[B, H, W, C]``.
"""
import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, register_notrace_module
from torch import nn

from ._checks import check_channels_last, check_dropout, check_heads, check_qkv, check_scale, select_simple_backend
from ._dispatch import add_attention_macs
from ._nonfinite import nonfinite_keys, poison, zero_keys

__all__ = [
    'window_partition', 'window_reverse', 'pad_to_window', 'shifted_window_mask', 'window_attention',
    'WindowAttention2D',
]

IntOrPair = Union[int, Sequence[int]]

def to_pair(value: IntOrPair, name: str, minimum: int = 1) -> Tuple[int, int]:
    """Broadcast an int to ``(v, v)`` (or check a pair); every value must be an int >= ``minimum``."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair):
        raise ValueError(f'{name} must be an int >= {minimum} or a pair of them, got {value!r}')
    return pair


# ---------------------------------------------------------------------------------------------
# Shared helpers (channels-last maps)
# ---------------------------------------------------------------------------------------------

@register_notrace_function  # FX: its int arguments would otherwise become proxies (as timm does for Swin)
def window_partition(x: torch.Tensor, window_size: Tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, C]`` (H, W multiples of the window) -> ``[B * nH * nW, wh, ww, C]``, windows row-major."""
    B, H, W, C = x.shape
    wh, ww = window_size
    x = x.reshape(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, C)


@register_notrace_function
def window_reverse(windows: torch.Tensor, window_size: Tuple[int, int], H: int, W: int) -> torch.Tensor:
    """Inverse of ``window_partition``: ``[B * nH * nW, wh, ww, C]`` -> ``[B, H, W, C]``."""
    wh, ww = window_size
    C = windows.shape[-1]
    x = windows.reshape(-1, H // wh, W // ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


@register_notrace_function
def pad_to_window(x: torch.Tensor, window_size: Tuple[int, int]) -> Tuple[torch.Tensor, int, int]:
    """Zero-pad a map ``[B, H, W, *rest]`` right/bottom to multiples of ``window_size``.

    Returns ``(padded, pad_h, pad_w)``.
    """
    H, W = x.shape[1], x.shape[2]
    pad_h = (window_size[0] - H % window_size[0]) % window_size[0]
    pad_w = (window_size[1] - W % window_size[1]) % window_size[1]
    if pad_h or pad_w:
        rest = [0, 0] * (x.dim() - 3)
        x = F.pad(x, rest + [0, pad_w, 0, pad_h])
    return x, pad_h, pad_w


def _region_labels(length: int, window: int, shift: int, device) -> torch.Tensor:
    """Swin's per-axis region of every position of the shifted map: slices (0,-w), (-w,-s), (-s,None)."""
    pos = torch.arange(length, device=device)
    return (pos >= length - window).long() + (pos >= length - shift).long()


def shifted_window_mask(Hp: int, Wp: int, window_size: Tuple[int, int], shift_size: Tuple[int, int],
                        valid_hw: Optional[Tuple[int, int]] = None, device=None) -> torch.Tensor:
    """Boolean mask ``[nW, wh*ww, wh*ww]`` (True = may attend) of the windows of a shifted padded map.

    Args:
        Hp, Wp: Padded map size (multiples of the window).
        window_size, shift_size: Window and cyclic shift (``shift < window``; 0 disables the region mask).
        valid_hw: ``(H, W)`` of the real map inside the padded one: padded keys are masked for real queries
            (padded queries keep their own region, so no row is empty).
    """
    (wh, ww), (sh, sw) = window_size, shift_size
    rows = _region_labels(Hp, wh, sh, device) if sh else torch.zeros(Hp, dtype=torch.long, device=device)
    cols = _region_labels(Wp, ww, sw, device) if sw else torch.zeros(Wp, dtype=torch.long, device=device)
    region = (rows[:, None] * 3 + cols[None, :])[None, :, :, None].float()
    region = window_partition(region, window_size).reshape(-1, wh * ww)
    mask = region[:, :, None] == region[:, None, :]
    if valid_hw is not None:
        H, W = valid_hw
        valid = torch.zeros(Hp, Wp, device=device)
        valid[:H, :W] = 1
        valid = torch.roll(valid, shifts=(-sh, -sw), dims=(0, 1))[None, :, :, None]
        valid = window_partition(valid, window_size).reshape(-1, wh * ww).bool()
        mask = mask & (valid[:, None, :] | ~valid[:, :, None])
    return mask


# ---------------------------------------------------------------------------------------------
# Functional op
# ---------------------------------------------------------------------------------------------

def _window_reference(q, k, v, window, shift, mask_padding, H, W, scale, dropout_p):
    """Dense attention over the whole padded, shifted map; the windows (and regions, padding) as a mask."""
    B, Hp, Wp, heads, _ = q.shape
    device = q.device
    rh, rw = torch.arange(Hp, device=device), torch.arange(Wp, device=device)
    win = ((rh // window[0])[:, None] * (Wp // window[1]) + (rw // window[1])[None, :]).flatten()
    mask = win[:, None] == win[None, :]
    if shift[0] or shift[1]:
        region = (_region_labels(Hp, window[0], shift[0], device)[:, None] * 3
                  + _region_labels(Wp, window[1], shift[1], device)[None, :]).flatten()
        mask = mask & (region[:, None] == region[None, :])
    if mask_padding:
        # position (i, j) of the shifted map holds the token ((i + sh) % Hp, (j + sw) % Wp) of the padded map
        valid = ((((rh + shift[0]) % Hp) < H)[:, None] & (((rw + shift[1]) % Wp) < W)[None, :]).flatten()
        mask = mask & (valid[None, :] | ~valid[:, None])
    compute = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = (t.flatten(1, 2).transpose(1, 2).to(compute) for t in (q, k, v))  # [B, heads, N, D]
    logits = (qf @ kf.transpose(-1, -2)) * scale
    attn = logits.masked_fill(~mask, float('-inf')).softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = (attn @ vf).to(q.dtype)
    return out.transpose(1, 2).reshape(B, Hp, Wp, heads, v.shape[-1])


def _window_torch(q, k, v, window, shift, mask_padding, H, W, scale, dropout_p):
    """Partition into windows and run SDPA on ``[B * nW, heads, wh*ww, D]``."""
    B, Hp, Wp, heads, dim = q.shape
    dim_v = v.shape[-1]
    tokens = window[0] * window[1]

    def windows(t):
        t = window_partition(t.flatten(3), window)  # [B*nW, wh, ww, heads*D]
        return t.reshape(t.shape[0], tokens, heads, t.shape[-1] // heads).transpose(1, 2)

    mask = None
    if shift[0] or shift[1] or (mask_padding and (Hp != H or Wp != W)):
        mask = shifted_window_mask(Hp, Wp, window, shift, (H, W) if mask_padding else None, device=q.device)
        mask = mask[None].expand(B, -1, -1, -1).reshape(-1, 1, tokens, tokens)
    out = F.scaled_dot_product_attention(windows(q), windows(k), windows(v), attn_mask=mask,
                                         dropout_p=dropout_p, scale=scale)
    out = out.transpose(1, 2).reshape(-1, window[0], window[1], heads * dim_v)
    return window_reverse(out, window, Hp, Wp).reshape(B, Hp, Wp, heads, dim_v)


def _attends_to(bad: torch.Tensor, window: Tuple[int, int], shift: Tuple[int, int]) -> torch.Tensor:
    """bool ``[B, Hp, Wp, heads]`` keys of the padded, shifted map -> bool ``[B, Hp, Wp, heads]``: the queries
    whose window and Swin region hold one of them (padded keys are zeros, never among them)."""
    B, Hp, Wp, heads = bad.shape
    tokens = window[0] * window[1]
    same = shifted_window_mask(Hp, Wp, window, shift, device=bad.device).float()  # [nW, T, T]
    keys = window_partition(bad.float(), window).reshape(B, -1, tokens, heads)  # [B, nW, T, heads]
    hits = (same @ keys).reshape(-1, window[0], window[1], heads)  # counts < T: exact in fp32
    return window_reverse(hits, window, Hp, Wp) > 0


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_size: IntOrPair,
                     shift_size: IntOrPair = 0, mask_padding: bool = True, scale: Optional[float] = None,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Non-overlapping window attention (Swin's W-MSA / SW-MSA without relative position bias).

    Args:
        q, k: ``[B, H, W, heads, head_dim]``; v: ``[B, H, W, heads, head_dim_v]``. Any ``H, W``: maps that are
            not multiples of the window are zero-padded right/bottom, and the output is cropped back.
        window_size: Window ``int`` or ``(wh, ww)``, ``1 <= (wh, ww) <= (H, W)``.
        shift_size: Cyclic shift ``int`` or ``(sh, sw)``, ``0 <= shift < window`` (0: plain windows, no mask).
        mask_padding: Mask the padded keys (True), or keep them as zero keys and values (False).
        scale: Logit scale, default ``head_dim ** -0.5``.
        dropout_p: Attention dropout (only meaningful in training).

    Returns:
        ``[B, H, W, heads, head_dim_v]``.
    """
    op = 'window_attention'
    check_qkv(op, q, k, v, ('B', 'H', 'W', 'heads', 'head_dim'))
    window = to_pair(window_size, 'window_size')
    H, W = q.shape[1], q.shape[2]
    if window[0] > H or window[1] > W:
        raise ValueError(f'{op}: window_size must be in [1, H={H}] x [1, W={W}] (at most the map on every axis; '
                         f'WindowAttention2D zero-pads smaller maps to the window), got {window_size!r}')
    shift = to_pair(shift_size, 'shift_size', minimum=0)
    if shift[0] >= window[0] or shift[1] >= window[1]:
        raise ValueError(f'{op}: shift_size must be smaller than window_size on each axis, got shift {shift} '
                         f'and window {window}')
    check_dropout(op, dropout_p)
    check_scale(op, 'scale', scale)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    backend = select_simple_backend(op)
    B, H, W, heads, _ = q.shape
    (q, pad_h, pad_w), (k, _, _), (v, _, _) = (pad_to_window(t, window) for t in (q, k, v))
    Hp, Wp = H + pad_h, W + pad_w
    add_attention_macs(B * heads * Hp * Wp * window[0] * window[1] * (q.shape[-1] + v.shape[-1]))
    if shift[0] or shift[1]:
        q, k, v = (torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(1, 2)) for t in (q, k, v))
    masked = backend == 'reference' or shift[0] or shift[1] or (mask_padding and (pad_h or pad_w))
    bad = nonfinite_keys(k, v) if masked else None  # ``_nonfinite``: masked pairs would spread a bad key
    if bad is not None:
        k, v = zero_keys(k, bad), zero_keys(v, bad)
    core = _window_reference if backend == 'reference' else _window_torch
    out = core(q, k, v, window, shift, mask_padding, H, W, scale, dropout_p)
    if bad is not None:
        out = poison(out, _attends_to(bad, window, shift))
    if shift[0] or shift[1]:
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    if pad_h or pad_w:
        out = out[:, :H, :W].contiguous()
    return out


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

def padded_qkv_attention(layer: nn.Module, x: torch.Tensor, pad_h: int, pad_w: int,
                         attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Forward of a map-attention layer that pads *before* ``qkv`` (``WindowAttention2D``, NAT's layer).

    ``x`` ``[B, H, W, C]`` is zero-padded right/bottom by ``pad_h``, ``pad_w`` (padded tokens carry the qkv bias
    and are not masked, as the released weights expect), projected by ``layer.qkv`` and split into
    ``q, k, v`` ``[B, Hp, Wp, layer.num_heads, layer.head_dim]`` for ``attend``, whose output is cropped back to
    ``H x W`` before ``layer.proj`` and ``layer.proj_drop``. Returns ``[B, H, W, C]``.
    """
    B, H, W, C = x.shape
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    q, k, v = layer.qkv(x).reshape(B, Hp, Wp, 3, layer.num_heads, layer.head_dim).unbind(3)
    x = attend(q, k, v).reshape(B, Hp, Wp, C)
    if pad_h or pad_w:
        x = x[:, :H, :W]
    return layer.proj_drop(layer.proj(x))


@register_notrace_module  # FX: a leaf (padding and backend choice are Python control flow)
class WindowAttention2D(nn.Module):
    """Multi-head window attention layer with the parameter names of Swin / L²ViT (``qkv``, ``proj``).

    The input map is zero-padded right/bottom to multiples of the window *before* ``qkv`` (padded tokens carry
    the qkv bias and are not masked, as in the released L²ViT and Swin weights), attended window by window
    (optionally shifted, with Swin's region mask) and cropped before ``proj``. No relative position bias.

    Input and output: ``[B, H, W, C]`` (channels-last).
    """

    def __init__(self, dim: int, num_heads: int, window_size: IntOrPair = 7, shift_size: IntOrPair = 0,
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.head_dim = check_heads(dim, num_heads)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = self.head_dim ** -0.5
        self.window_size = to_pair(window_size, 'window_size')
        self.shift_size = to_pair(shift_size, 'shift_size', minimum=0)
        if self.shift_size[0] >= self.window_size[0] or self.shift_size[1] >= self.window_size[1]:
            raise ValueError(f'shift_size {self.shift_size} must be smaller than window_size {self.window_size}')
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        check_channels_last('WindowAttention2D', x, self.dim)
        (H, W), (wh, ww) = x.shape[1:3], self.window_size
        attend = functools.partial(window_attention, window_size=self.window_size, shift_size=self.shift_size,
                                   mask_padding=False, scale=self.scale,
                                   dropout_p=self.attn_drop if self.training else 0.0)
        return padded_qkv_attention(self, x, -H % wh, -W % ww, attend)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'shift_size={self.shift_size}')
