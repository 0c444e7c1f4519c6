"""FaViT's factorized self-attention (FaSA).

FaSA is neither window nor neighborhood attention: every query of the map attends to the *same* small set of
keys per head. The channels are split into groups (``mul = (2, 7, 7)`` sixteenths when ``sr_ratio > 1``,
``(1, 7)`` eighths when ``sr_ratio == 1``):

* a global group of one head (``C_g`` channels): PVT's spatial-reduction attention (``sr`` conv with kernel and
  stride ``sr_ratio``, LayerNorm, ``kv_g``; a 3x3 depthwise ``local_conv_g`` is added to V);
* one or two local groups over ``heads`` heads, with dilation 1 and ``sr_ratio``: K/V come from a depthwise +
  pointwise conv of the input (``kv_l``), are **reflection**-padded right/bottom to multiples of the stride
  ``s = d * (w - 1) + 1``, sampled on a ``w x w`` grid of spacing ``d`` in every non-overlapping ``s x s`` tile
  (``nn.Unfold``) and aggregated over the tiles into ``w*w`` tokens per head (``factorize_windows``), then
  ``fcs`` / ``single_heads`` Linears give the keys and values and ``local_convs`` (3x3 depthwise) is added to V.

The aggregation reproduces the official ``AdaptiveAvgPool2d((None, C_i/h))`` over the tile-major flattening
``(tile, channel)``: output channel ``j`` is the mean of the flattened elements ``j*L .. (j+1)*L - 1`` (``L``
tiles), i.e. it mixes channels across tiles; it is *not* a per-channel mean over tiles.

Channel order (matters for the weights): q's local channels are split *inside each head* (group 1 takes the first
``C_1/h`` of every head), K/V groups are contiguous channel blocks, and the output is ``[global | 1 | 2]``.

Layouts: ``factorize_windows`` takes ``[B, C, H, W]``; ``factorized_attention`` takes ``[B, heads, N, head_dim]``
queries against ``[B, heads, M, head_dim]`` keys; ``FactorizedSelfAttention`` maps ``[B, H, W, C]`` to the same.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, register_notrace_module
from torch import nn

from ._checks import (check_channels_last, check_dropout, check_key_tokens, check_scale, check_tensor,
                      select_simple_backend)
from ._dispatch import add_attention_macs

__all__ = ['factorize_windows', 'factorized_attention', 'factorized_min_size', 'FactorizedSelfAttention']


def factorized_min_size(window_size: int, dilation: int) -> int:
    """Smallest map side that the reflection padding of ``factorize_windows`` accepts.

    Padding ``(s - L % s) % s`` must stay below the side ``L`` (``s = dilation * (window_size - 1) + 1``);
    sides from ``floor(s / 2) + 1`` up work (e.g. 25 for the stride 49 of window 7, dilation 8).
    """
    stride = dilation * (window_size - 1) + 1
    return stride // 2 + 1


@register_notrace_function
def factorize_windows(x: torch.Tensor, num_heads: int, window_size: int = 7, dilation: int = 1) -> torch.Tensor:
    """FaViT's "factorization": ``w*w`` key/value source tokens per head that summarise every tile of the map.

    Args:
        x: ``[B, C, H, W]`` with ``C`` divisible by ``num_heads``.
        num_heads: Heads; channels are split head-major (head ``h`` owns channels ``h*C/heads ..``).
        window_size: ``w``, the side of the sampling grid (FaViT: 7).
        dilation: Spacing ``d`` of the grid; tiles have side ``s = d * (w - 1) + 1``.

    Returns:
        ``[B, heads, w*w, C/heads]``.

    Raises:
        ValueError: when a side is too small for the right/bottom reflection padding to a multiple of ``s``
            (the official code crashes there; see ``factorized_min_size``).
    """
    if x.dim() != 4:
        raise ValueError(f'factorize_windows: x must be [B, C, H, W], got shape {tuple(x.shape)}')
    B, C, H, W = x.shape
    if C % num_heads:
        raise ValueError(f'factorize_windows: channels ({C}) must be divisible by num_heads ({num_heads})')
    if window_size < 1 or dilation < 1:
        raise ValueError(f'factorize_windows: window_size and dilation must be >= 1, got {window_size}, {dilation}')
    s = dilation * (window_size - 1) + 1
    pad_h, pad_w = (s - H % s) % s, (s - W % s) % s
    if pad_h >= H or pad_w >= W:
        raise ValueError(
            f'factorize_windows: a {H}x{W} map is too small for window {window_size} with dilation {dilation}: '
            f'reflection padding to a multiple of the stride {s} needs every side >= '
            f'{factorized_min_size(window_size, dilation)} (FaViT needs input images of at least 97x97 px)')
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
    nty, ntx = (H + pad_h) // s, (W + pad_w) // s
    tiles = nty * ntx
    cph = C // num_heads
    x = x.view(B, C, nty, s, ntx, s)[:, :, :, ::dilation, :, ::dilation]  # [B, C, nty, w, ntx, w]
    x = x.reshape(B, num_heads, cph, nty, window_size, ntx, window_size)
    x = x.permute(0, 1, 4, 6, 3, 5, 2)  # [B, h, wy, wx, ty, tx, c] = nn.Unfold's (tile, channel) order per point
    # AdaptiveAvgPool2d((None, cph)) over the flattened (tile, channel) axis: equal runs of `tiles` elements
    return x.reshape(B, num_heads, window_size * window_size, cph, tiles).mean(-1)


def factorized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                         dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention of every query against one shared, small key set (FaSA's global and local groups).

    Args:
        q: ``[B, heads, N, head_dim]``; k: ``[B, heads, M, head_dim]``; v: ``[B, heads, M, head_dim_v]``, with
            ``M >= 1``; one dtype and device.
        scale: Logit scale, default ``head_dim ** -0.5``.
        dropout_p: Attention dropout (only meaningful in training).

    Returns:
        ``[B, heads, N, head_dim_v]``.
    """
    op = 'factorized_attention'
    for name, t in (('q', q), ('k', k), ('v', v)):
        check_tensor(op, name, t, ('B', 'heads', 'tokens', 'head_dim'))
    check_key_tokens(op, q, k, v, 'M')
    if k.shape[2] < 1:
        raise ValueError(f'{op}: k must hold at least one key (M >= 1), got shape {tuple(k.shape)}')
    check_scale(op, 'scale', scale)
    check_dropout(op, dropout_p)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    B, heads, N, dim = q.shape
    add_attention_macs(B * heads * N * k.shape[2] * (dim + v.shape[-1]))
    if select_simple_backend(op) == 'reference':
        attn = ((q @ k.transpose(-2, -1)) * scale).softmax(-1)
        if dropout_p > 0:
            attn = F.dropout(attn, dropout_p)
        return attn @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


class _DepthwiseSeparableConv(nn.Module):
    """3x3 depthwise conv then 1x1 pointwise conv (the official ``DEPTHWISECONV``, FaSA's ``kv_l``)."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.depth_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.point_conv = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


@register_notrace_module  # FX: a leaf (group loop and size checks are Python control flow)
class FactorizedSelfAttention(nn.Module):
    """FaViT's factorized self-attention with the official parameter names.

    ``q``; global group: ``sr``, ``norm``, ``kv_g``, ``local_conv_g``; local groups: ``kv_l`` (``depth_conv``,
    ``point_conv``), ``fcs.i``, ``single_heads.i``, ``local_convs.i``; ``proj``.

    Input and output: ``[B, H, W, C]`` (channels-last). Every side must be at least ``min_size``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, window_size: int = 7, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        mul = (2, 7, 7) if sr_ratio > 1 else (1, 7)
        if dim % sum(mul):
            raise ValueError(f'dim ({dim}) must be a multiple of {sum(mul)} (FaSA splits it into {mul} parts)')
        self.group_dims: List[int] = [dim // sum(mul) * m for m in mul]
        for c in self.group_dims[1:]:
            if c % num_heads:
                raise ValueError(f'local group width {c} (dim={dim}) must be divisible by num_heads ({num_heads})')
        self.dim = dim
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.window_size = window_size
        self.dilations: List[int] = [1, sr_ratio][:len(mul) - 1]
        self.attn_drop = attn_drop
        cg, cl = self.group_dims[0], dim - self.group_dims[0]

        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv_g = nn.Linear(cg, cg * 2, bias=qkv_bias, **dd)
        self.kv_l = _DepthwiseSeparableConv(cl, **dd)
        self.sr = nn.Conv2d(cg, cg, kernel_size=sr_ratio, stride=sr_ratio, **dd)
        self.norm = nn.LayerNorm(cg, **dd)
        self.local_conv_g = nn.Conv2d(cg, cg, 3, padding=1, groups=cg, **dd)
        self.fcs = nn.ModuleList()
        self.single_heads = nn.ModuleList()
        self.local_convs = nn.ModuleList()
        for c in self.group_dims[1:]:
            cph = c // num_heads
            self.fcs.append(nn.Linear(cph, cph, bias=qkv_bias, **dd))
            self.single_heads.append(nn.Linear(cph, 2 * cph, bias=qkv_bias, **dd))
            self.local_convs.append(nn.Conv2d(c, c, 3, padding=1, groups=c, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def min_size(self) -> int:
        """Smallest map side accepted (reflection padding of the local groups; the ``sr`` conv needs ``sr_ratio``)."""
        return max([self.sr_ratio] + [factorized_min_size(self.window_size, d) for d in self.dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        check_channels_last('FactorizedSelfAttention', x, self.dim)
        B, H, W, C = x.shape
        if H < self.min_size or W < self.min_size:
            raise ValueError(
                f'FactorizedSelfAttention: a {H}x{W} map is too small for sr_ratio {self.sr_ratio} and window '
                f'{self.window_size}: every side must be >= {self.min_size} (FaViT needs input images of at least '
                f'97x97 px)')
        N, heads, w = H * W, self.num_heads, self.window_size
        drop = self.attn_drop if self.training else 0.0
        cg, cl = self.group_dims[0], C - self.group_dims[0]
        x_g, x_l = x.split([cg, cl], dim=-1)
        q_g, q_l = self.q(x).reshape(B, N, C).split([cg, cl], dim=-1)

        # global group: one head, spatial-reduction attention
        x_g = self.sr(x_g.permute(0, 3, 1, 2))  # [B, Cg, H/r, W/r] (floored)
        hg, wg = x_g.shape[-2:]
        k_g, v_g = self.kv_g(self.norm(x_g.flatten(2).transpose(1, 2))).chunk(2, dim=-1)  # [B, Ng, Cg] each
        v_g = v_g + self.local_conv_g(v_g.transpose(1, 2).reshape(B, cg, hg, wg)).flatten(2).transpose(1, 2)
        out_g = factorized_attention(q_g[:, None], k_g[:, None], v_g[:, None], scale=cg ** -0.5,
                                     dropout_p=drop)[:, 0]  # [B, N, Cg]

        # local groups (equal widths): K/V from contiguous channel blocks of kv_l; q is split inside each head,
        # so the groups run as one attention call over heads ordered (head, group)
        groups = len(self.dilations)
        cph = self.group_dims[1] // heads
        keys, values = [], []
        for i, (kv_i, dil) in enumerate(zip(self.kv_l(x_l.permute(0, 3, 1, 2)).split(self.group_dims[1:], dim=1),
                                            self.dilations)):
            tokens = factorize_windows(kv_i, heads, w, dil)  # [B, h, w*w, cph]
            k_i, v_i = self.single_heads[i](self.fcs[i](tokens)).chunk(2, dim=-1)
            v_i = v_i + self.local_convs[i](v_i.transpose(2, 3).reshape(B, heads * cph, w, w)).view(
                B, heads, cph, w * w).transpose(2, 3)
            keys.append(k_i)
            values.append(v_i)
        k_l, v_l = (torch.stack(t, dim=2).reshape(B, heads * groups, w * w, cph) for t in (keys, values))
        out_l = factorized_attention(q_l.reshape(B, N, heads * groups, cph).transpose(1, 2), k_l, v_l,
                                     scale=cph ** -0.5, dropout_p=drop)  # [B, h*groups, N, cph]
        out_l = out_l.view(B, heads, groups, N, cph).permute(0, 3, 2, 1, 4).reshape(B, N, cl)  # [g1 | g2]
        x = self.proj(torch.cat([out_g, out_l], dim=-1))
        return self.proj_drop(x).view(B, H, W, C)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, '
                f'window_size={self.window_size}, group_dims={self.group_dims}')
