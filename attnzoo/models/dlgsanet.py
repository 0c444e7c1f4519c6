"""DLGSANet (image super-resolution), registered in timm.

Paper:
    DLGSANet: Lightweight Dynamic Local and Global Self-Attention Networks for Image Super-Resolution,
    Li, Pan, Tang, Dong, ICCV 2023 - https://arxiv.org/abs/2301.02031
Official code and weights (a BasicSR fork, Apache-2.0): https://github.com/NeonLeexiang/DLGSANet

The network maps an RGB image in [0, 1] (``[B, 3, H, W]``) to its ``scale``-times larger version
(``[B, 3, s*H, s*W]``, not clamped). There is no classifier: ``num_classes`` is 0 and the pretrained configs say
``task='super_resolution'`` and ``scale``.

Layout (names here; ``checkpoint_filter_fn`` maps the official ones)::

    x -> (x - DIV2K mean) -> conv_first (3x3, no bias)
      -> stages: ``groups`` x RHDTG [ ``blocks`` x HDTB -> 3x3 conv, + residual ] -> conv_after_body, + long skip
      -> upsample (3x3 conv to 3*s^2 channels + PixelShuffle) -> + DIV2K mean

    HDTB = local_layer  (x + MHDLSA(LN(x)); x + GDFN(LN(x)))
         + global_layer (x + SparseGSA(LN(x)); x + GDFN(LN(x)))

* MHDLSA (:class:`DynamicLocalAttention`): 1x1 conv -> per-pixel 7x7 dynamic depthwise conv whose kernels a
  hypernetwork (1x1 -> depthwise 7x7 -> 1x1, biases, no norm/activation) predicts from the 1x1 output -> 1x1 conv.
  The official ``idynamic_num_heads=6`` is the number of *channels per kernel group* (G = C / 6 groups).
  The dynamic conv is ``attnzoo.ops.dynamic_dwconv2d`` (pure PyTorch; the official code needs a CuPy kernel).
* SparseGSA (:class:`SparseGlobalAttention`): Restormer's transposed (channel x channel) attention, with ReLU in
  place of softmax. In ``eval()`` mode, unless ``tlc=False``, it uses TLC (test-time local converter) as the
  official code does: the channel attention is computed in overlapping ``tlc_kernel`` x ``tlc_kernel`` windows of
  the LR feature map (96 / 72 / 48 px for x2 / x3 / x4) and averaged where they overlap; training attends globally.
  Unlike the official code, TLC here accepts any batch size (each sample's windows are independent).

For large images :meth:`DLGSANet.forward_tiled` runs the network on LR tiles (default: the official TLC window
size, plus ``tile_pad`` px of context on every side) and stitches the outputs.

Differences from the official code: the DIV2K mean is a non-persistent buffer (the official plain attribute),
LayerNorms are ``timm.layers.LayerNorm2d`` (identical to the official ``WithBias_LayerNorm`` over channels),
the ``'pixelshuffle'`` / plain-conv reconstruction branches and the ``'edge'`` / ``'restormer'`` ablation blocks,
which no released model uses, are left out (``block_type='idynamic'``, the local-only ablation, is kept).
The pixel shuffle is written as a reshape / permute (:class:`PixelShuffle`): PyTorch's own
``PixelShuffleBackward`` returns a gradient of the wrong shape for an empty batch.
"""
import math
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

from attnzoo.ops import dynamic_dwconv2d

from ._base import unmapped_keys_error, unwrap_state_dict
from ._pretrained import resolve_pretrained

__all__ = ['DLGSANet', 'DynamicLocalAttention', 'SparseGlobalAttention', 'checkpoint_filter_fn', 'tlc_windows',
           'tiled_inference', 'sr_pretrained_cfg']

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
TLC_KERNEL = {2: 96, 3: 72, 4: 48}  # official tlc_kernel per scale (LR px)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------

class GDFN(nn.Module):
    """Restormer's gated-dconv feed-forward network: 1x1 (C -> 2*hidden), 3x3 depthwise, GELU gate, 1x1 (no biases)."""

    def __init__(self, dim: int, expansion: float = 2.0, bias: bool = False):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle`` (``[B, C*s*s, H, W] -> [B, C, s*H, s*W]``, the same element order) as a reshape and a
    permute, whose backward also takes ``B = 0`` (torch's ``PixelShuffleBackward`` does not); on the CPU the
    forward + backward of the upsampler's shuffle measured 3x faster than torch's op (230 against 680 us for
    ``dlgsanet_tiny_x2`` on a 2 x 48 x 48 batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.upscale_factor
        b, c, h, w = x.shape
        x = x.reshape(b, c // (s * s), s, s, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (s * s), h * s, w * s)


class DynamicLocalAttention(nn.Module):
    """MHDLSA: ``conv1(dynamic_dwconv(U, hypernet(U)))`` with ``U = conv0(x)``.

    Args:
        dim: channels C.
        kernel_size: dynamic kernel size (7).
        group_channels: channels sharing one dynamic kernel (the official ``idynamic_num_heads``, 6); the number of
            kernel groups is ``dim // group_channels``.
        reduction: hypernetwork width reduction (4).
    """

    def __init__(self, dim: int, kernel_size: int = 7, group_channels: int = 6, reduction: int = 4):
        super().__init__()
        if dim % group_channels:
            raise ValueError(f'group_channels={group_channels} must divide dim={dim}')
        self.kernel_size = kernel_size
        self.num_groups = dim // group_channels
        hidden = dim // reduction
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.kernel_gen = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
            nn.Conv2d(hidden, kernel_size * kernel_size * self.num_groups, 1),
        )
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.conv0(x)
        return self.conv1(dynamic_dwconv2d(u, self.kernel_gen(u), self.kernel_size))


def tlc_windows(height: int, width: int, kernel: int) -> Tuple[int, int, List[Tuple[int, int]]]:
    """TLC window grid of the official code (megvii-research/TLC): window size ``(kh, kw) = min(size, kernel)`` and
    the top-left corners, row-major; the last row/column is aligned to the border and the stride is
    ``ceil((size - k) / (n - 1))``."""
    kh, kw = min(height, kernel), min(width, kernel)

    def starts(size: int, k: int) -> List[int]:
        n = (size - 1) // k + 1
        step = k if n == 1 else math.ceil((size - k) / (n - 1) - 1e-8)
        out, i, last = [], 0, False
        while i < size and not last:
            if i + k >= size:
                i, last = size - k, True
            out.append(i)
            i += step
        return out

    return kh, kw, [(i, j) for i in starts(height, kh) for j in starts(width, kw)]


class SparseGlobalAttention(nn.Module):
    """SparseGSA: transposed (channel) self-attention with a ReLU sparsifier, TLC windows at eval.

    ``qkv = dw3x3(1x1(x))``; per head, q and k are L2-normalised over the pixels, ``attn = ReLU(q k^T * t)`` is a
    ``(C/heads) x (C/heads)`` map, ``out = attn v``, then a 1x1 projection (no biases anywhere).
    """

    def __init__(self, dim: int, num_heads: int = 6, tlc: bool = True, tlc_kernel: int = 48,
                 activation: str = 'relu'):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'num_heads={num_heads} must divide dim={dim}')
        acts = {'relu': nn.ReLU, 'gelu': nn.GELU, 'sigmoid': nn.Sigmoid, 'none': nn.Identity}
        if activation not in acts:
            raise ValueError(f'activation must be one of {sorted(acts)}, got {activation!r}')
        self.num_heads = num_heads
        self.tlc = tlc
        self.tlc_kernel = tlc_kernel
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)
        self.act = acts[activation]()

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        b, c3, h, w = qkv.shape
        q, k, v = qkv.reshape(b, 3, self.num_heads, c3 // (3 * self.num_heads), h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = self.act((q @ k.transpose(-2, -1)) * self.temperature)
        return (attn @ v).reshape(b, c3 // 3, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_dwconv(self.qkv(x))
        if self.training or not self.tlc:
            return self.project_out(self._attend(qkv))
        b = qkv.shape[0]  # symbolic under torch.export: the batch stays dynamic
        h, w = (int(d) for d in qkv.shape[2:])  # the window grid is laid out in Python, also under jit tracing (fvcore)
        kh, kw, corners = tlc_windows(h, w, self.tlc_kernel)
        if len(corners) == 1:
            return self.project_out(self._attend(qkv))
        parts = torch.cat([qkv[:, :, i:i + kh, j:j + kw] for i, j in corners], dim=0)
        outs = self._attend(parts).unflatten(0, (len(corners), b)).unbind(0)  # no guard on a symbolic batch
        out = qkv.new_zeros(b, qkv.shape[1] // 3, h, w)
        count = qkv.new_zeros(1, 1, h, w)
        for (i, j), o in zip(corners, outs):
            out[:, :, i:i + kh, j:j + kw] += o
            count[:, :, i:i + kh, j:j + kw] += 1
        return self.project_out(out / count)


class LocalLayer(nn.Module):
    """``x + MHDLSA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, kernel_size: int, group_channels: int, ffn_expansion: float):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.attn = DynamicLocalAttention(dim, kernel_size, group_channels)
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class GlobalLayer(nn.Module):
    """``x + SparseGSA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion: float, tlc: bool, tlc_kernel: int,
                 activation: str):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.attn = SparseGlobalAttention(dim, num_heads, tlc, tlc_kernel, activation)
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class HDTB(nn.Module):
    """Hybrid dynamic-Transformer block: a local (MHDLSA) layer, then (``sparseedge``) a global (SparseGSA) layer."""

    def __init__(self, dim: int, block_type: str, kernel_size: int, group_channels: int, num_heads: int,
                 ffn_expansion: float, tlc: bool, tlc_kernel: int, activation: str):
        super().__init__()
        self.local_layer = LocalLayer(dim, kernel_size, group_channels, ffn_expansion)
        self.global_layer = GlobalLayer(dim, num_heads, ffn_expansion, tlc, tlc_kernel, activation) \
            if block_type == 'sparseedge' else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_layer(x)
        return x if self.global_layer is None else self.global_layer(x)


class RHDTG(nn.Module):
    """Residual hybrid dynamic-Transformer group: ``x + conv3x3(HDTB^n(x))``."""

    def __init__(self, dim: int, depth: int, **block_kwargs):
        super().__init__()
        self.blocks = nn.Sequential(*[HDTB(dim, **block_kwargs) for _ in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            y = checkpoint_seq(self.blocks, x)
        else:
            y = self.blocks(x)
        return x + self.conv(y)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------

class DLGSANet(nn.Module):
    """DLGSANet for x``scale`` image super-resolution.

    Args:
        scale: upscaling factor (2, 3, 4, ...; the official ``upscale``).
        in_chans: image channels (3: RGB in [0, 1]; the DIV2K mean is subtracted inside).
        dim: channels C (48 tiny / light, 90 full).
        groups: number of RHDTGs (3 tiny, 4 light, 6 full).
        blocks: HDTBs per RHDTG (3 tiny / light, 4 full).
        block_type: ``'sparseedge'`` (MHDLSA + SparseGSA, every released model) or ``'idynamic'`` (MHDLSA only).
        kernel_size: dynamic-kernel size (7; the official ``window_size``).
        group_channels: channels per dynamic-kernel group (6; the official ``idynamic_num_heads``).
        num_heads: SparseGSA heads (6; the official ``restormer_num_heads``).
        ffn_expansion: GDFN expansion (2).
        tlc: use TLC windows in SparseGSA in eval mode (official ``tlc_flag``, True).
        tlc_kernel: TLC window (LR px); default 96 / 72 / 48 for x2 / x3 / x4.
        activation: SparseGSA sparsifier (``'relu'``).
        img_range: the official ``img_range`` (1.0).
        num_classes: must be 0 (accepted so timm's factory can pass it).
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, dim: int = 48, groups: int = 3, blocks: int = 3,
                 block_type: str = 'sparseedge', kernel_size: int = 7, group_channels: int = 6, num_heads: int = 6,
                 ffn_expansion: float = 2.0, tlc: bool = True, tlc_kernel: Optional[int] = None,
                 activation: str = 'relu', img_range: float = 1.0, num_classes: int = 0, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f'DLGSANet got unexpected arguments {sorted(kwargs)}')
        if num_classes:
            raise ValueError(f'DLGSANet is a super-resolution network without a classifier; num_classes must be 0, '
                             f'got {num_classes}')
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f'scale must be a positive int, got {scale!r}')
        if block_type not in ('sparseedge', 'idynamic'):
            raise ValueError(f"block_type must be 'sparseedge' or 'idynamic', got {block_type!r}")
        if tlc_kernel is None:
            tlc_kernel = TLC_KERNEL.get(scale, 48)
        self.scale = scale
        self.in_chans = in_chans
        self.dim = dim
        self.num_features = dim
        self.num_classes = 0
        self.depths = (blocks,) * groups
        self.block_type = block_type
        self.kernel_size = kernel_size
        self.group_channels = group_channels
        self.num_heads = num_heads
        self.ffn_expansion = ffn_expansion
        self.tlc_kernel = tlc_kernel
        self.img_range = img_range
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer('mean', torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(in_chans, dim, 3, padding=1, bias=False)
        block_kwargs = dict(block_type=block_type, kernel_size=kernel_size, group_channels=group_channels,
                            num_heads=num_heads, ffn_expansion=ffn_expansion, tlc=tlc, tlc_kernel=tlc_kernel,
                            activation=activation)
        self.stages = nn.Sequential(*[RHDTG(dim, blocks, **block_kwargs) for _ in range(groups)])
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(dim, in_chans * scale * scale, 3, padding=1), PixelShuffle(scale))

    # timm conventions ------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^conv_first', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.blocks\.(\d+)')

    def set_tlc(self, enable: bool) -> None:
        """Switch TLC windows (eval-mode SparseGSA) on or off."""
        for m in self.modules():
            if isinstance(m, SparseGlobalAttention):
                m.tlc = enable

    # forward ---------------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """LR image -> deep features ``[B, C, H, W]`` (shallow features + long skip included)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'x: expected an image batch [B, {self.in_chans}, H, W], got shape {list(x.shape)}')
        x = (x - self.mean.to(x.dtype)) * self.img_range
        x = self.conv_first(x)
        return self.conv_after_body(self.stages(x)) + x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features -> SR image (upsampler, mean added back; not clamped)."""
        return self.upsample(x) / self.img_range + self.mean.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def forward_tiled(self, x: torch.Tensor, tile: Optional[int] = None, tile_pad: int = 16) -> torch.Tensor:
        """Super-resolve ``x`` tile by tile (bounded memory for large images); see :func:`tiled_inference`.
        ``tile`` defaults to the official TLC window of this scale (96 / 72 / 48 LR px)."""
        return tiled_inference(self, x, self.scale, tile or self.tlc_kernel, tile_pad)

    # accounting ------------------------------------------------------------------------------------------------
    def flops(self, input_resolution: Tuple[int, int]) -> float:
        """The official analytic ``DLGSANet.flops()`` (MACs, as the paper's FLOPs column) for an LR input
        ``(h, w)``; the paper uses ``(1280 // s, 720 // s)``. It reproduces the official count including its
        undercounts (GDFN depthwise term without the pixel count, body-tail conv as ``3*C*C`` per pixel, the
        upsampler without its ``s^2`` factor, the hypernetwork partly counted); ``attnzoo.utils.flops.count_macs``
        counts every conv and matmul instead."""
        h, w = input_resolution
        n, c, k2 = h * w, self.dim, self.kernel_size ** 2
        e = self.ffn_expansion
        ffn = n * c * c * e * 2 + c * e * 2 * 9 + n * c * e * c
        local = 2 * c * n + (n * c * c + (n * c * c / 4 + n * c * k2 + n * c / 4 * c / self.group_channels * k2)
                             + n * c * k2 + n * c * c) + ffn
        t = self.tlc_kernel
        n_win = ((h - 1) // t + 1) * ((w - 1) // t + 1)
        heads = self.num_heads
        gsa = n * c * c * 3 + n * c * 3 * 9
        gsa += ((n_win * heads * c) // heads * t * t * c) // heads
        gsa += ((n_win * heads * c) // heads * c) // heads * t * t
        gsa += n * c * c
        glob = 2 * c * n + gsa + ffn
        per_block = local + (glob if self.block_type == 'sparseedge' else 0)
        group = len(self.depths)
        total = h * w * 3 * c * 9
        total += group * (self.depths[0] * per_block + n * c * c * 9)
        total += n * 3 * c * c
        total += n * c * 3 * 9
        return total


@torch.no_grad()
def tiled_inference(model: nn.Module, x: torch.Tensor, scale: int, tile: int, tile_pad: int = 16) -> torch.Tensor:
    """Run an SR ``model`` on ``tile`` x ``tile`` LR tiles, each with ``tile_pad`` px of context (clipped at the
    image border), and paste each tile's centre into the ``scale``-times larger output (BasicSR's ``tile_process``
    scheme). A model whose receptive field is at most ``tile_pad`` px gives exactly the whole-image output."""
    if tile < 1 or tile_pad < 0:
        raise ValueError(f'tile must be >= 1 and tile_pad >= 0, got tile={tile}, tile_pad={tile_pad}')
    b, c, h, w = x.shape
    out = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
            t1, l1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
            y = model(x[:, :, t0:t1, l0:l1])
            if out is None:
                out = y.new_zeros(b, y.shape[1], h * scale, w * scale)
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = \
                y[:, :, (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ----------------------------------------------------------------------------------------------------------------

_LAYER_RENAMES = (
    (r'^norm[13]\.body\.', 'norm1.'),
    (r'^norm[24]\.body\.', 'norm2.'),
    (r'^IDynamicDWConv\.conv\.conv1\.0\.', 'attn.kernel_gen.0.'),
    (r'^IDynamicDWConv\.conv\.conv1\.1\.', 'attn.kernel_gen.1.'),
    (r'^IDynamicDWConv\.conv\.conv2\.0\.', 'attn.kernel_gen.2.'),
    (r'^IDynamicDWConv\.', 'attn.'),
    (r'^restormer_attn\.', 'attn.'),
    (r'^(IDynamic|restormer)_ffn\.', 'ffn.'),
)


def _unwrap(state_dict: Dict[str, Any], key: Optional[str]) -> Dict[str, Any]:
    if key is not None:
        if key not in state_dict:
            raise KeyError(f'checkpoint has no {key!r} entry; top-level keys: {sorted(state_dict)[:10]}')
        return state_dict[key]
    return unwrap_state_dict(state_dict, ('params', 'params_ema', 'state_dict', 'model'))


def _rename(key: str, model: DLGSANet) -> str:
    key = re.sub(r'^overlap_embed\.0\.proj\.', 'conv_first.', key)
    groups = len(model.depths)
    m = re.match(r'^deep_feature_extraction\.(\d+)\.(.*)$', key)
    if not m:
        return key
    g, rest = int(m.group(1)), m.group(2)
    if g == groups:
        return f'conv_after_body.{rest}'
    m = re.match(r'^body\.(\d+)\.(.*)$', rest)
    if not m:
        return key
    idx, rest = int(m.group(1)), m.group(2)
    per_block = 2 if model.block_type == 'sparseedge' else 1
    if idx == model.depths[g] * per_block:
        return f'stages.{g}.conv.{rest}'
    j, kind = divmod(idx, per_block)
    layer = 'local_layer' if kind == 0 else 'global_layer'
    for pattern, repl in _LAYER_RENAMES:
        rest, n = re.subn(pattern, repl, rest)
        if n:
            break
    return f'stages.{g}.blocks.{j}.{layer}.{rest}'


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: DLGSANet, key: Optional[str] = None
                         ) -> Dict[str, torch.Tensor]:
    """Convert an official DLGSANet checkpoint (BasicSR ``{'params': ..., 'params_ema': ...}`` or a bare state
    dict with the official names, SparseGSA under ``restormer_attn``) to this model's keys; identity on our own
    format. ``key`` picks the wrapper entry; by default ``'params'`` (what BasicSR's test mode loads), then
    ``'params_ema'``.

    Raises:
        ValueError: listing every key that does not map onto a parameter of ``model``.
    """
    state_dict = _unwrap(state_dict, key)
    model_state = model.state_dict()
    out, unmapped = {}, []
    for k, v in state_dict.items():
        new_k = _rename(k, model)
        if new_k not in model_state:
            unmapped.append(k if k == new_k else f'{k} (-> {new_k})')
        out[new_k] = v
    if unmapped:
        raise unmapped_keys_error(
            unmapped, f'DLGSANet(dim={model.dim}, groups={len(model.depths)}, blocks={model.depths[0]}, '
            f'scale={model.scale})', 'checkpoint of another variant or scale?', max_listed=20)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------------

def _create_dlgsanet(variant: str, pretrained: bool = False, download_page: Optional[str] = None,
                     **kwargs) -> DLGSANet:
    """Build a variant; ``download_page``: where its released weights are fetched by hand (no direct URL)."""
    if kwargs.get('features_only'):
        raise ValueError(f'{variant}: features_only is not supported by the super-resolution network')
    resolve_pretrained(variant, pretrained, kwargs, download_page=download_page)
    model = build_model_with_cfg(DLGSANet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
    # timm's PretrainedCfg has no task fields; the instance's cfg dict carries them (see ``sr_pretrained_cfg``)
    model.pretrained_cfg = {**model.pretrained_cfg, **_task_fields(model.scale)}
    model.default_cfg = model.pretrained_cfg
    return model


def _task_fields(scale: int) -> Dict[str, Any]:
    return {'task': 'super_resolution', 'scale': scale, 'tlc_kernel': TLC_KERNEL.get(scale, 48)}


def sr_pretrained_cfg(model_name: str) -> Dict[str, Any]:
    """``timm.models.get_pretrained_cfg(model_name)`` as a dict plus ``task='super_resolution'``, ``scale`` and
    ``tlc_kernel`` (what ``timm.create_model(model_name).pretrained_cfg`` holds)."""
    import timm
    cfg = timm.models.get_pretrained_cfg(model_name.split('.')[0])
    scale = int(re.search(r'_x(\d+)$', model_name.split('.')[0]).group(1))
    return {**(cfg.to_dict() if cfg is not None else {}), **_task_fields(scale)}


_ORIGIN = 'https://github.com/NeonLeexiang/DLGSANet'
_DRIVE_LIGHT = 'https://drive.google.com/drive/folders/1jbh5hNP4AGhsMPabWG7yq1mIDa_FcriO'
_DRIVE_CLASSIC = 'https://drive.google.com/drive/folders/1kqjoO7IEi7QmaOSEH37xKjRA_LcmL2eU'


# the released weights: Google Drive folders (BasicSR files, no direct URL); none for the full model at x2 / x3
_RELEASES = {**{(size, s): _DRIVE_LIGHT for size in ('tiny', 'light') for s in (2, 3, 4)}, ('full', 4): _DRIVE_CLASSIC}
_LIGHT_NOTE = 'DIV2K-trained; the maintainer\'s 2025 retrain (the paper\'s lightweight weights were lost).'


def _cfg(scale: int, notes: str, download_page: Optional[str]) -> Dict[str, Any]:
    route = (f' Weights are BasicSR files in {download_page} (Google Drive, no direct URL): download, then '
             'pretrained=True, pretrained_cfg_overlay=dict(file=PATH).' if download_page else '')
    return {
        'url': '', 'description': f'x{scale} image super-resolution (task=super_resolution, scale={scale})',
        'input_size': (3, 48, 48), 'fixed_input_size': False, 'crop_pct': 1.0, 'interpolation': 'bicubic',
        'mean': (0.0, 0.0, 0.0), 'std': (1.0, 1.0, 1.0), 'num_classes': 0, 'first_conv': 'conv_first',
        'classifier': None,
        'license': 'apache-2.0', 'origin_url': _ORIGIN, 'paper_ids': 'arXiv:2301.02031',
        'paper_name': 'DLGSANet: Lightweight Dynamic Local and Global Self-Attention Networks for Image '
                      'Super-Resolution',
        'notes': f'{notes} Input RGB in [0, 1]; output not clamped.{route}',
    }


default_cfgs = generate_default_cfgs({
    **{f'dlgsanet_{size}_x{s}.div2k': _cfg(s, _LIGHT_NOTE if size != 'full' else 'DIV2K-trained full model.', page)
       for (size, s), page in _RELEASES.items()},
    **{f'dlgsanet_full_x{s}': _cfg(s, f'No x{s} full-model weights were released.', None) for s in (2, 3)},
})

_ARCHS = {
    'tiny': dict(dim=48, groups=3, blocks=3),
    'light': dict(dim=48, groups=4, blocks=3),
    'full': dict(dim=90, groups=6, blocks=4),
}


def _build(size: str, scale: int, pretrained: bool, kwargs: Dict[str, Any]) -> DLGSANet:
    return _create_dlgsanet(f'dlgsanet_{size}_x{scale}', pretrained, _RELEASES.get((size, scale)),
                            **{**_ARCHS[size], 'scale': scale, **kwargs})


@register_model
def dlgsanet_tiny_x2(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('tiny', 2, pretrained, kwargs)


@register_model
def dlgsanet_tiny_x3(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('tiny', 3, pretrained, kwargs)


@register_model
def dlgsanet_tiny_x4(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('tiny', 4, pretrained, kwargs)


@register_model
def dlgsanet_light_x2(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('light', 2, pretrained, kwargs)


@register_model
def dlgsanet_light_x3(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('light', 3, pretrained, kwargs)


@register_model
def dlgsanet_light_x4(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('light', 4, pretrained, kwargs)


@register_model
def dlgsanet_full_x2(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('full', 2, pretrained, kwargs)


@register_model
def dlgsanet_full_x3(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('full', 3, pretrained, kwargs)


@register_model
def dlgsanet_full_x4(pretrained: bool = False, **kwargs) -> DLGSANet:
    return _build('full', 4, pretrained, kwargs)
