"""BiFormer (Bi-Level Routing Attention vision transformer), registered in timm.

Paper: BiFormer: Vision Transformer with Bi-Level Routing Attention, Zhu et al., CVPR 2023 -
https://arxiv.org/abs/2303.08810
Official code and weights (MIT): https://github.com/rayleizhu/BiFormer

One model class covers every released variant:

* ``biformer_{tiny,small,base}`` (official ``models/biformer.py``): overlapping 3x3 conv + BN stem and downsamplers,
  a residual 3x3 depthwise-conv position embedding before every block, MLP ratio 3.
* ``biformer_stl`` (``models/biformer_stl.py``, Swin-Tiny layout): 4x4 patchify stem + BN, BN + 2x2 conv
  downsamplers, no position-embedding conv, MLP ratio 4.
* ``biformer_stl_nchw`` (``models/biformer_stl_nchw.py``): the same layout with the refactored NCHW attention
  (``attn_layout='nchw'``): identical at 224 px; for maps not divisible by the region grid it pads q/k/v
  (not the input) and routes on the unpadded region means, and its global attention adds LePE of v, not of x.

Stages 1-3 use bi-level routing attention (``attnzoo.ops.routing_attention``): ``num_regions`` (the official
``n_win``) regions per side, top-k 1/4/16, one routing per image shared by the heads, scale
``dim ** -0.5`` (full channel count, a quirk the released weights depend on), LePE (5x5 depthwise conv) of v added
before the output projection. Stage 4 is global attention with 8 heads (hard-coded in the official code), a
bias-free qkv, ``head_dim ** -0.5`` and LePE of the attention input.

Any input size works: where a map is not divisible by the region grid, the attention layer zero-pads its (normed)
input bottom/right before qkv and crops after the projection, exactly as the official ``auto_pad`` path that the
released detection/segmentation models use (padded tokens carry the qkv bias and are unmasked keys). At 224 px with
7 regions (the classifiers) nothing is padded. Dense-prediction use sets ``num_regions=8`` (ADE20K) or 16 (COCO)
as the official configs do.

Feature maps are NCHW between blocks (as the official code); ``forward_features`` returns ``[B, C, H/32, W/32]``
after the pre-head BatchNorm.

Layout differences from the official code (``checkpoint_filter_fn`` converts): ``downsample_layers.0`` -> ``stem``,
``downsample_layers.i`` -> ``stages.i.downsample``; ``stages.i.j`` -> ``stages.i.blocks.j``; ``attn.qkv.qkv`` /
``attn.qkv_linear`` -> ``attn.qkv``; ``attn.wo`` / ``attn.output_linear`` -> ``attn.proj``; ``mlp.0`` / ``mlp.3``
(``mlp.2`` in STL) -> ``mlp.fc1`` / ``mlp.fc2``; 1x1 conv weights of the NCHW variant -> Linear weights;
``head`` -> ``head.fc``.
"""
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, register_notrace_module, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, named_apply, register_model

from attnzoo.ops import routing_attention
from attnzoo.ops._dispatch import exporting
from attnzoo.ops.routing import _region_logits

from ._base import (
    build_staged_model, StagedClassifier, check_drop_rates, check_image_batch, remap_state_dict, unwrap_state_dict)
from ._pretrained import resolve_pretrained

__all__ = ['BiFormer', 'BiLevelRoutingAttention', 'GlobalAttentionLePE', 'checkpoint_filter_fn',
           'biformer_dense_kwargs']

_ATTN_LAYOUTS = ('legacy', 'nchw')
_STEM_TYPES = ('conv', 'patch')


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------------------------------------------
# Attention layers
# ----------------------------------------------------------------------------------------------------------------

@register_notrace_module  # FX: a leaf (padding and routing are data-shape control flow)
class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention with LePE, ``[B, H, W, C]`` -> ``[B, H, W, C]`` (channels-last).

    Owns ``qkv`` (Linear C -> 3C, bias), ``lepe`` (depthwise ``side_dwconv`` conv on v) and ``proj``.
    ``attn_layout='legacy'`` (official ``ops/bra_legacy.py``): maps not divisible by ``num_regions`` are zero-padded
    bottom/right before ``qkv`` (with ``auto_pad``; without it they raise) and cropped after ``proj``.
    ``attn_layout='nchw'`` (official ``ops/bra_nchw.py``): regions of ``floor(H / num_regions)`` tokens (so there
    can be more than ``num_regions`` per side), q/k/v zero-padded after ``qkv``, routing on the region means of the
    unpadded tokens (unscaled), LePE on the unpadded v.
    """

    def __init__(self, dim: int, num_heads: int, num_regions: int = 7, topk: int = 4, side_dwconv: int = 5,
                 auto_pad: bool = True, attn_layout: str = 'legacy', device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        if attn_layout not in _ATTN_LAYOUTS:
            raise ValueError(f'attn_layout: expected one of {_ATTN_LAYOUTS}, got {attn_layout!r}')
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.num_regions, self.topk, self.auto_pad, self.attn_layout = num_regions, topk, auto_pad, attn_layout
        self.scale = dim ** -0.5  # full channel count, as the released weights were trained with
        self.qkv = nn.Linear(dim, 3 * dim, **dd)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def _split(self, qkv: torch.Tensor):
        B, H, W, _ = qkv.shape
        return qkv.reshape(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_layout == 'nchw':
            return self._forward_nchw(x)
        B, H, W, C = x.shape
        s = self.num_regions
        Hp, Wp = (H + s - 1) // s * s, (W + s - 1) // s * s  # multiples of s, also for a symbolic (exported) size
        pad_b, pad_r = Hp - H, Wp - W
        if not self.auto_pad and (pad_b or pad_r):
            raise ValueError(f'BiLevelRoutingAttention: the map ({H}x{W}) is not divisible by num_regions={s} '
                             f'and auto_pad is False')
        # under torch.export the pad is symbolic: always padded (by 0 where divisible) so no branch fixes H, W
        padded = exporting() or pad_b or pad_r
        if padded:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        q, k, v = self._split(self.qkv(x))
        out = routing_attention(q, k, v, s, self.topk, scale=self.scale).reshape(B, Hp, Wp, C)
        out = out + _nhwc(self.lepe(_nchw(v.reshape(B, Hp, Wp, C))))
        out = self.proj(out)
        if padded:
            out = out[:, :H, :W].contiguous()
        return out

    def _forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], x.shape[3]
        H, W = int(x.shape[1]), int(x.shape[2])  # ints also under tracing (fvcore)
        s = self.num_regions
        if H < s or W < s:
            raise ValueError(f'BiLevelRoutingAttention (nchw): the map ({H}x{W}) must be at least num_regions={s} '
                             f'per side (regions are floor(H / num_regions) tokens)')
        rh, rw = H // s, W // s
        nh, nw = -(-H // rh), -(-W // rw)
        q, k, v = self._split(self.qkv(x))
        lepe = _nhwc(self.lepe(_nchw(v.reshape(B, H, W, C))))
        pad_b, pad_r = nh * rh - H, nw * rw - W
        if pad_b or pad_r:
            # routing on the unpadded tokens' region means (avg_pool2d, ceil_mode, count_include_pad=False)
            with torch.no_grad():
                pool = dict(kernel_size=(rh, rw), ceil_mode=True, count_include_pad=False)
                q_r = F.avg_pool2d(_nchw(q.detach().reshape(B, H, W, C)), **pool).flatten(2).transpose(1, 2)
                k_r = F.avg_pool2d(_nchw(k.detach().reshape(B, H, W, C)), **pool).flatten(2).transpose(1, 2)
                idx = torch.topk(_region_logits(q_r, k_r, 1.0), k=self.topk, dim=-1).indices
            q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad_r, 0, pad_b)) for t in (q, k, v))
            out = routing_attention(q, k, v, (nh, nw), self.topk, scale=self.scale, routing=idx, check_routing=False)
            out = out[:, :H, :W]
        else:
            out = routing_attention(q, k, v, (nh, nw), self.topk, scale=self.scale, routing_scale=1.0)
        return self.proj(out.reshape(B, H, W, C) + lepe)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, num_regions={self.num_regions}, topk={self.topk}, '
                f'attn_layout={self.attn_layout!r}')


@register_notrace_module  # FX: a leaf (padding and routing are data-shape control flow)
class GlobalAttentionLePE(nn.Module):
    """Stage-4 global multi-head attention with LePE, ``[B, H, W, C]`` -> ``[B, H, W, C]``.

    Official ``AttentionLePE`` (``lepe_on='x'``: LePE of the attention input) or ``nchwAttentionLePE``
    (``lepe_on='v'``). ``qkv`` has no bias; scale ``head_dim ** -0.5``; 8 heads in every released model.
    """

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5, lepe_on: str = 'x', device=None,
                 dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        if lepe_on not in ('x', 'v'):
            raise ValueError(f"lepe_on: expected 'x' or 'v', got {lepe_on!r}")
        self.dim, self.num_heads, self.head_dim, self.lepe_on = dim, num_heads, dim // num_heads, lepe_on
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **dd)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        out = routing_attention(q, k, v, 1, 1, scale=self.scale).reshape(B, H, W, C)  # one region: global
        lepe_in = x if self.lepe_on == 'x' else v.reshape(B, H, W, C)
        return self.proj(out + _nhwc(self.lepe(_nchw(lepe_in))))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, lepe_on={self.lepe_on!r}'


# ----------------------------------------------------------------------------------------------------------------
# Blocks, stages
# ----------------------------------------------------------------------------------------------------------------

class BiFormerBlock(nn.Module):
    """``x + pos_embed(x)`` (optional 3x3 depthwise conv), then pre-norm attention and MLP; NCHW in and out."""

    def __init__(self, dim: int, num_heads: int, num_regions: int, topk: Optional[int], mlp_ratio: float = 3.,
                 side_dwconv: int = 5, pos_embed_kernel: int = 3, global_heads: int = 8, auto_pad: bool = True,
                 attn_layout: str = 'legacy', drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        # padding is hard-coded to 1 in the official code, whatever the kernel
        self.pos_embed = nn.Conv2d(dim, dim, pos_embed_kernel, padding=1, groups=dim, **dd) \
            if pos_embed_kernel > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        if topk is None or topk <= 0:
            self.attn = GlobalAttentionLePE(dim, global_heads, side_dwconv,
                                            lepe_on='v' if attn_layout == 'nchw' else 'x', **dd)
        else:
            self.attn = BiLevelRoutingAttention(dim, num_heads, num_regions, topk, side_dwconv, auto_pad,
                                                attn_layout, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = _nhwc(x)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return _nchw(x)


class BiFormerStem(nn.Sequential):
    """Checks its input, then ``[B, in_chans, H, W]`` -> ``[B, dim, H/4, W/4]``: 3x3 stride-2 conv, BN, GELU, 3x3
    stride-2 conv, BN (``'conv'``) or a 4x4 patchify conv, BN (``'patch'``, STL); a ``Sequential`` for the official
    ``stem.<i>`` keys."""

    def __init__(self, stem_type: str, in_chans: int, dim: int, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        if stem_type == 'conv':
            super().__init__(
                nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1, **dd), nn.BatchNorm2d(dim // 2, **dd), nn.GELU(),
                nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1, **dd), nn.BatchNorm2d(dim, **dd))
        else:
            super().__init__(nn.Conv2d(in_chans, dim, 4, stride=4, **dd), nn.BatchNorm2d(dim, **dd))
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans)
        return super().forward(x)


def _downsample(kind: str, dim: int, out_dim: int, device=None, dtype=None) -> nn.Sequential:
    dd = {'device': device, 'dtype': dtype}
    if kind == 'conv':  # BiFormer: overlapping 3x3 stride-2 conv, BN
        return nn.Sequential(nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, **dd), nn.BatchNorm2d(out_dim, **dd))
    return nn.Sequential(nn.BatchNorm2d(dim, **dd), nn.Conv2d(dim, out_dim, 2, stride=2, **dd))  # STL: BN, 2x2


class BiFormerStage(nn.Module):
    """Optional downsampler, then blocks; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, depth: int, downsample: Optional[str], drop_path: Sequence[float],
                 **block_kwargs):
        super().__init__()
        dd = {'device': block_kwargs.get('device'), 'dtype': block_kwargs.get('dtype')}
        self.grad_checkpointing = False
        self.downsample = _downsample(downsample, dim, out_dim, **dd) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[BiFormerBlock(out_dim, drop_path=drop_path[i], **block_kwargs)
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------

class BiFormer(StagedClassifier):
    """BiFormer / BiFormer-STL. Input ``[B, in_chans, H, W]``; stage ``i`` maps ``[B, embed_dims[i], H/2^(i+2),
    W/2^(i+2)]`` (NCHW). The final ``norm`` is the pre-head BatchNorm; ``forward_intermediates`` returns the stage
    outputs before it, as the official det/seg backbones. Only timm's default (1-d parameters) is excluded from
    weight decay: the official ``{'pos_embed', 'cls_token'}`` names match nothing.
    """
    output_fmt = 'NCHW'

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 8, 2),
            head_dim: int = 32,
            num_regions: int = 7,
            topks: Sequence[Optional[int]] = (1, 4, 16, -2),
            mlp_ratios: Union[float, Sequence[float]] = 3.,
            side_dwconv: int = 5,
            pos_embed_kernel: int = 3,
            global_heads: int = 8,
            stem_type: str = 'conv',
            attn_layout: str = 'legacy',
            auto_pad: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Input image channels.
            num_classes: Classifier outputs (0: no classifier).
            global_pool: Head pooling ('avg', 'max', 'avgmax', 'catavgmax', '').
            embed_dims: Channels per stage.
            depths: Blocks per stage.
            head_dim: Head width of the routing-attention stages (heads = dim // head_dim).
            num_regions: Regions per side of the routing (official ``n_win``: 7 for ImageNet, 8 ADE20K, 16 COCO).
            topks: Routed regions per stage; None or <= 0 means global attention with LePE (the official -2/-1).
            mlp_ratios: MLP hidden width / dim (one value or one per stage).
            side_dwconv: LePE depthwise kernel.
            pos_embed_kernel: Kernel of the per-block depthwise position-embedding conv (0: none, as in STL).
            global_heads: Heads of the global-attention stages (8, hard-coded in the official code).
            stem_type: 'conv' (two 3x3 stride-2 convs with BN/GELU; 3x3 stride-2 conv + BN downsamplers) or 'patch'
                (STL: 4x4 patchify conv + BN; BN + 2x2 conv downsamplers).
            attn_layout: 'legacy' (``bra_legacy.py``) or 'nchw' (``bra_nchw.py`` + ``nchwAttentionLePE``).
            auto_pad: Pad maps not divisible by the region grid (else raise).
            drop_rate: Dropout before the classifier.
            drop_path_rate: Stochastic depth, linear from 0 over all blocks.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        num_stages = len(depths)
        for name, value in (('embed_dims', embed_dims), ('topks', topks)):
            if len(value) != num_stages:
                raise ValueError(f'{name}: expected one value per stage ({num_stages} stages from depths='
                                 f'{list(depths)}), got {len(value)}: {list(value)}')
        if stem_type not in _STEM_TYPES:
            raise ValueError(f'stem_type: expected one of {_STEM_TYPES}, got {stem_type!r}')
        if attn_layout not in _ATTN_LAYOUTS:
            raise ValueError(f'attn_layout: expected one of {_ATTN_LAYOUTS}, got {attn_layout!r}')
        mlp_ratios = tuple(mlp_ratios) if isinstance(mlp_ratios, (list, tuple)) else (mlp_ratios,) * num_stages
        for i, (dim, topk) in enumerate(zip(embed_dims, topks)):
            if topk is not None and topk > 0:
                if dim % head_dim:
                    raise ValueError(f'embed_dims[{i}]={dim} must be divisible by head_dim={head_dim}')
                if topk > num_regions ** 2:
                    raise ValueError(f'topks[{i}]={topk} must be <= num_regions**2 = {num_regions ** 2}')
            elif dim % global_heads:
                raise ValueError(f'embed_dims[{i}]={dim} must be divisible by global_heads={global_heads}')

        self.in_chans = in_chans
        self.num_features = embed_dims[-1]
        self.stem = BiFormerStem(stem_type, in_chans, embed_dims[0], **dd)

        check_drop_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))  # linear over all blocks (a list: meta-safe)
        stages, self.feature_info, cur = [], [], 0
        for i in range(num_stages):
            stages.append(BiFormerStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], depths[i],
                downsample=(stem_type if i > 0 else None),
                drop_path=dpr[cur:cur + depths[i]],
                num_heads=embed_dims[i] // head_dim if embed_dims[i] % head_dim == 0 else 1,
                num_regions=num_regions, topk=topks[i], mlp_ratio=mlp_ratios[i], side_dwconv=side_dwconv,
                pos_embed_kernel=pos_embed_kernel, global_heads=global_heads, auto_pad=auto_pad,
                attn_layout=attn_layout, **dd))
            cur += depths[i]
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features, **dd)
        self._init_head(num_classes, global_pool, drop_rate, **dd)
        named_apply(_init_weights, self)


def _init_weights(module: nn.Module, name: str = '') -> None:
    """Official init: Linear trunc_normal(std=.02) with zero bias; LayerNorm 1/0; convs and BN keep PyTorch's."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

_RENAMES = (
    (r'^downsample_layers\.0\.', 'stem.'),
    (r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.'),
    (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),  # biformer.py: a stage is a Sequential of blocks
    (r'\.attn\.qkv\.qkv\.', '.attn.qkv.'),
    (r'\.attn\.qkv_linear\.', '.attn.qkv.'),
    (r'\.attn\.(?:wo|output_linear)\.', '.attn.proj.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.[23]\.', '.mlp.fc2.'),  # mlp.3 (biformer.py: Identity at 1, GELU at 2), mlp.2 (STL)
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
)


def _conv1x1_to_linear(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``remap_state_dict`` adapter: 1x1 conv weights ``[out, in, 1, 1]`` (NCHW variant) -> Linear ``[out, in]``."""
    return value.flatten(1) if value.ndim == 4 and target.ndim == 2 else value


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Convert an official BiFormer / BiFormer-STL / BiFormer-STL-nchw checkpoint to this model's keys.

    Accepts ``{'model': ...}`` (the releases; ``'model'`` wins over ``'model_ema'``), ``'state_dict'`` wrappers
    and bare state dicts; the identity on this module's own format. 1x1 conv weights (NCHW variant) become Linear
    weights. ``num_batches_tracked`` buffers pass through. Classifier keys pass even without a classifier.

    Raises:
        ValueError: listing every key that does not map onto ``model`` (e.g. the det/seg ``extra_norms.*``).
    """
    state_dict = unwrap_state_dict(state_dict, ('model', 'state_dict', 'model_ema'), nested=True)
    return remap_state_dict(
        state_dict, model, _RENAMES,
        'a checkpoint of another variant, or a detection/segmentation backbone with extra_norms?',
        adapt=_conv1x1_to_linear)


# ----------------------------------------------------------------------------------------------------------------
# Builders, pretrained configs, registered variants
# ----------------------------------------------------------------------------------------------------------------

# Dense prediction settings (read by attnzoo.models.dense): regions per side and padding of maps not divisible
# by them (official object_detection/ and semantic_segmentation/ configs: n_win=16 / 8, auto_pad=True), and the
# LayerNorm after each returned map of the official dense backbone (checkpoint key pattern, eps).
DENSE_PRESETS = {'coco': dict(num_regions=16, auto_pad=True), 'ade20k': dict(num_regions=8, auto_pad=True)}
DENSE_OUT_NORM = (r'^extra_norms\.(\d+)\.(weight|bias)$', 1e-6)


def biformer_dense_kwargs(model_name: str, preset: str, model_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """BiFormer constructor kwargs for the dense ``preset`` (``'coco'``, ``'ade20k'``): :data:`DENSE_PRESETS`."""
    return dict(DENSE_PRESETS[preset])


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    """Build a variant. ``features_only=True`` uses timm's getter (NCHW maps from ``forward_intermediates``,
    trailing stages pruned). The official URLs all end in ``/root/content``, so a download is cached as
    ``<variant>_<tag>.pth``."""
    resolve_pretrained(variant, pretrained, kwargs, cache_file=f'{variant}_{{tag}}.pth')
    return build_staged_model(BiFormer, variant, pretrained, checkpoint_filter_fn, (2, 2, 8, 2), **kwargs)


_ONEDRIVE = 'https://api.onedrive.com/v1.0/shares/{}/root/content'


def _cfg(share: str, **kwargs) -> Dict[str, Any]:
    return {
        'url': _ONEDRIVE.format(share),
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0', 'classifier': 'head.fc',
        'license': 'mit', 'origin_url': 'https://github.com/rayleizhu/BiFormer',
        'paper_ids': 'arXiv:2303.08810', 'paper_name': 'BiFormer: Vision Transformer with Bi-Level Routing Attention',
        'notes': ('Official OneDrive share links (fragile, see weights.md); files are {"model": state_dict}. '
                  'Use pretrained_cfg_overlay=dict(file=...) with a local copy.',),
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'biformer_tiny.in1k': _cfg('s!AkBbczdRlZvChHEOoGkgwgQzEDlM'),
    'biformer_small.in1k': _cfg('s!AkBbczdRlZvChHDyM-x9KWRBZ832'),
    'biformer_base.in1k': _cfg('s!AkBbczdRlZvChHI_XPhoadjaNxtO'),
    'biformer_stl.in1k': _cfg('s!AkBbczdRlZvChSf-m7ujkvx9lIQ1'),
    # the official nchw attention needs every stage-3 map (stride 16) to hold 7 regions per side
    'biformer_stl_nchw.in1k': _cfg('s!AkBbczdRlZvChWYrKbWbMgqd2Ai0', min_input_size=(3, 112, 112)),
})

# Architectures (official models/biformer*.py); drop-path rates are left to the training configs.
_BIFORMER = dict(head_dim=32, num_regions=7, topks=(1, 4, 16, -2), mlp_ratios=3., side_dwconv=5, pos_embed_kernel=3)
_TINY = dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512), **_BIFORMER)
_SMALL = dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512), **_BIFORMER)
_BASE = dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768), **_BIFORMER)
_STL = dict(depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), head_dim=32, num_regions=7, topks=(1, 4, 16, -2),
            mlp_ratios=4., side_dwconv=5, pos_embed_kernel=0, stem_type='patch')


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_tiny', pretrained, **{**_TINY, **kwargs})


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_small', pretrained, **{**_SMALL, **kwargs})


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_base', pretrained, **{**_BASE, **kwargs})


@register_model
def biformer_stl(pretrained: bool = False, **kwargs) -> BiFormer:
    """BiFormer in Swin-Tiny's layout (the paper's ablation model)."""
    return _create_biformer('biformer_stl', pretrained, **{**_STL, **kwargs})


@register_model
def biformer_stl_nchw(pretrained: bool = False, **kwargs) -> BiFormer:
    """BiFormer-STL with the refactored NCHW attention (its own checkpoint: stage 4 adds LePE of v, not of x)."""
    return _create_biformer('biformer_stl_nchw', pretrained, **{**_STL, 'attn_layout': 'nchw', **kwargs})
