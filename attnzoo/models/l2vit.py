"""L²ViT (local window attention + enhanced linear global attention), registered in timm.

Paper: The Linear Attention Resurrection in Vision Transformer, Chuanyang Zheng, 2025 - https://arxiv.org/abs/2501.16182
Official code and weights (MIT): https://github.com/ChuanyangZheng/L2ViT

Architecture (official ``classification/models/l2vit.py``, ``block_type='mix_local_enhanced_vit'``, ``conv_stem=True``):

* Stem: zero-pad the image right/bottom to a multiple of 4, conv3x3/s2 -> BN -> ReLU -> conv3x3/s2 -> BN, LayerNorm.
* Stages 2-4 start with LayerNorm (over the input channels), zero-pad to even size, conv2x2/s2.
* Inside every stage block ``j`` even is LWA, ``j`` odd is LGA:
  - LWA: ``s = cpe0(x)``; ``x = s + attn(norm1(s))`` with plain (unshifted, bias-free) window attention, the normed
    map zero-padded to multiples of the window *before* qkv (padded keys unmasked); ``x = cpe1(x)``;
    ``x = x + mlp(norm2(x))``.
  - LGA: ``x = cpe0(x)``; ``x = x + linear_attn(norm1(x))`` (ReLU kernel, denominator clamped at 100, per-head
    temperature on the numerator only); ``x = x + LCM(norm3(x))`` with LCM = dw7x7 -> GELU -> BN -> dw7x7 (its own
    residual branch); ``x = x + mlp(norm2(x))``.
  - CPE: ``x + dwconv3x3(x)``.
* Final LayerNorm, global average pooling, linear head.

All maps inside the model are channels-last ``[B, H, W, C]``; ``forward_features`` returns that layout
(``output_fmt = 'NHWC'``), ``forward_intermediates`` / ``features_only`` return NCHW maps by default.

Key differences from the official layout (``checkpoint_filter_fn`` converts): ``downsample_layers.0.proj.proj`` ->
``stem.proj``, ``downsample_layers.0.norm`` -> ``stem.norm``, ``downsample_layers.i`` -> ``stages.i.downsample``,
``stages.i.j`` -> ``stages.i.blocks.j``, ``head`` -> ``head.fc``.
"""
from typing import Any, Dict, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, named_apply, register_model

from attnzoo.ops.linear import LinearAttention
from attnzoo.ops.window import WindowAttention2D

from ._base import (
    build_staged_model, StagedClassifier, check_drop_rates, check_image_batch, remap_state_dict, unwrap_state_dict)

__all__ = ['L2ViT', 'checkpoint_filter_fn']


# ----------------------------------------------------------------------------------------------------------------
# Layers (channels-last maps [B, H, W, C])
# ----------------------------------------------------------------------------------------------------------------

def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


class ConvStem(nn.Module):
    """Pad to a multiple of 4, conv3x3/s2 -> BN -> ReLU -> conv3x3/s2 -> BN, then LayerNorm.

    ``[B, in_chans, H, W]`` -> ``[B, ceil(H/4), ceil(W/4), embed_dim]``.
    """

    def __init__(self, in_chans: int, embed_dim: int, norm_layer: Type[nn.Module] = nn.LayerNorm,
                 device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1, **dd),
            nn.BatchNorm2d(embed_dim // 2, **dd),
            nn.ReLU(),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1, **dd),
            nn.BatchNorm2d(embed_dim, **dd),
        )
        self.norm = norm_layer(embed_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans)
        x = F.pad(x, (0, (4 - x.shape[-1] % 4) % 4, 0, (4 - x.shape[-2] % 4) % 4))
        return self.norm(_nhwc(self.proj(x)))


class Downsample(nn.Module):
    """LayerNorm over the input channels, zero-pad to even size, non-overlapping conv2x2/s2.

    ``[B, H, W, dim]`` -> ``[B, ceil(H/2), ceil(W/2), out_dim]``.
    """

    def __init__(self, dim: int, out_dim: int, norm_layer: Type[nn.Module] = nn.LayerNorm, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm = norm_layer(dim, **dd)
        self.proj = nn.Conv2d(dim, out_dim, kernel_size=2, stride=2, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _nchw(self.norm(x))
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return _nhwc(self.proj(x))


class CPE(nn.Module):
    """Conditional position encoding: ``x + dwconv3x3(x)`` on ``[B, H, W, C]``."""

    def __init__(self, dim: int, kernel_size: int = 3, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _nhwc(self.proj(_nchw(x)))


class LCM(nn.Module):
    """Local concentration module: dwconv7x7 -> GELU -> BatchNorm -> dwconv7x7 on ``[B, H, W, C]``."""

    def __init__(self, dim: int, kernel_size: int = 7, act_layer: Type[nn.Module] = nn.GELU, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)
        self.act = act_layer()
        self.bn = nn.BatchNorm2d(dim, **dd)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nhwc(self.conv2(self.bn(self.act(self.conv1(_nchw(x))))))


class LWABlock(nn.Module):
    """Local window attention block (two CPEs, plain 7x7 windows, no shift, no relative position bias)."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4., qkv_bias: bool = True,
                 proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 act_layer: Type[nn.Module] = nn.GELU, norm_layer: Type[nn.Module] = nn.LayerNorm,
                 device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.cpe = nn.ModuleList([CPE(dim, **dd), CPE(dim, **dd)])
        self.norm1 = norm_layer(dim, **dd)
        self.attn = WindowAttention2D(dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                      proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = self.cpe[1](x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGABlock(nn.Module):
    """Enhanced linear global attention block: CPE, linear attention, LCM (own residual branch, ``norm3``), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 proj_drop: float = 0., drop_path: float = 0., act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Type[nn.Module] = nn.LayerNorm, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.cpe = nn.ModuleList([CPE(dim, **dd)])
        self.norm1 = norm_layer(dim, **dd)
        self.attn = LinearAttention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm3 = norm_layer(dim, **dd)
        self.local_mp = LCM(dim, act_layer=act_layer, **dd)
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        B, H, W, C = x.shape
        x = x + self.drop_path(self.attn(self.norm1(x).reshape(B, H * W, C)).view(B, H, W, C))
        x = x + self.drop_path(self.local_mp(self.norm3(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class L2ViTStage(nn.Module):
    """Optional downsampler, then blocks alternating LWA (even index) and LGA (odd index)."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int, downsample: bool,
                 mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0.,
                 drop_path: Union[float, Sequence[float]] = 0., act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Type[nn.Module] = nn.LayerNorm, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(dim, out_dim, norm_layer, **dd) if downsample else nn.Identity()
        drop_paths = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop, act_layer=act_layer,
                      norm_layer=norm_layer, **dd)
        self.blocks = nn.Sequential(*[
            LWABlock(out_dim, num_heads, window_size, attn_drop=attn_drop, drop_path=drop_paths[j], **common)
            if j % 2 == 0 else LGABlock(out_dim, num_heads, drop_path=drop_paths[j], **common)
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def _init_weights(module: nn.Module, name: str = '') -> None:
    """Official init: Conv2d and Linear weights trunc_normal(std=.02), zero bias; norms keep their defaults."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------

class L2ViT(StagedClassifier):
    """L²ViT: conv stem, four stages of alternating local-window / linear-global blocks, LayerNorm, linear head.

    Input ``[B, in_chans, H, W]`` of any size; stage ``i`` maps are ``[B, ceil(H/(4*2^i)), ceil(W/(4*2^i)), dims[i]]``
    (channels-last). Local blocks zero-pad their normed map to multiples of ``window_size``. ``forward_intermediates``
    returns the un-normed stage outputs, as the official det/seg backbones tap them before their own output norms.
    Only timm's default (1-d parameters) is excluded from weight decay: the official recipe decays the
    ``[heads, 1, 1]`` temperatures.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            dims: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            act_layer: Type[nn.Module] = nn.GELU,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Input image channels.
            num_classes: Classifier outputs (0: no classifier, ``forward`` returns pooled features).
            global_pool: Pooling type of the head ('avg', 'max', 'avgmax', 'catavgmax', '' for none).
            dims: Channels per stage.
            depths: Blocks per stage (even index: local window attention, odd: linear global attention).
            num_heads: Attention heads per stage (the released models use head_dim 32).
            window_size: Side of the local attention windows (7; 12 for the 384 px model).
            mlp_ratio: MLP hidden width / block width.
            qkv_bias: Bias in the qkv projections.
            drop_rate: Dropout before the classifier.
            proj_drop_rate: Dropout after the attention projections and in the MLPs.
            attn_drop_rate: Dropout on the window-attention weights (the linear attention has none).
            drop_path_rate: Stochastic depth, linear from 0 over all blocks.
            act_layer: MLP and LCM activation.
            norm_layer: Normalization layer over the channels of NHWC maps.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        num_stages = len(depths)
        for name, values in (('dims', dims), ('num_heads', num_heads)):
            if len(values) != num_stages:
                raise ValueError(f'{name}: expected one value per stage ({num_stages} stages from depths='
                                 f'{list(depths)}), got {len(values)}: {list(values)}')
        for i, (d, h) in enumerate(zip(dims, num_heads)):
            if d % h:
                raise ValueError(f'dims[{i}]={d} must be divisible by num_heads[{i}]={h}')
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'window_size: expected an int >= 1, got {window_size!r}')
        self.in_chans = in_chans
        self.num_features = dims[-1]

        self.stem = ConvStem(in_chans, dims[0], norm_layer, **dd)
        check_drop_rates(drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        self.feature_info = []
        for i in range(num_stages):
            stages.append(L2ViTStage(
                dim=dims[max(i - 1, 0)],
                out_dim=dims[i],
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                downsample=i > 0,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                act_layer=act_layer,
                norm_layer=norm_layer,
                **dd,
            ))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features, **dd)
        self._init_head(num_classes, global_pool, drop_rate, **dd)
        named_apply(_init_weights, self)


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

_RENAMES = (
    (r'^module\.', ''),
    (r'^downsample_layers\.0\.proj\.proj\.', 'stem.proj.'),
    (r'^downsample_layers\.0\.norm\.', 'stem.norm.'),
    (r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.'),
    (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Convert an official L²ViT checkpoint to this model's keys.

    The releases (``*-checkpoint-best-ema.pth``, ``*-checkpoint-best.pth``) are training checkpoints holding
    ``'model'`` (the weights the README's evaluation command loads and reports) and, for EMA runs, ``'model_ema'``.
    ``use_ema=True`` picks the EMA weights instead. Bare state dicts, ``'state_dict'`` wrappers, ``module.``
    prefixes and this module's own format (headless included) are accepted.

    Raises:
        ValueError: listing every key that does not map onto a parameter or buffer of ``model`` (e.g. the
            ``norm0..3`` output norms of a detection / segmentation backbone).
    """
    if use_ema and not isinstance(state_dict.get('model_ema'), dict) and isinstance(state_dict.get('model'), dict):
        raise ValueError("state_dict: use_ema=True but the checkpoint has no 'model_ema' entry "
                         f"(keys: {sorted(k for k in state_dict if not torch.is_tensor(state_dict[k]))})")
    keys = ('model_ema', 'model', 'state_dict') if use_ema else ('model', 'state_dict', 'model_ema')
    return remap_state_dict(unwrap_state_dict(state_dict, keys), model, _RENAMES,
                            'another variant, or a detection/segmentation checkpoint?')


_OFFICIAL_ARGS = {'depths', 'dims', 'num_heads', 'window_size', 'num_classes', 'in_chans', 'drop_path_rate',
                  'mlp_ratio'}
_OFFICIAL_FIXED = dict(block_type='mix_local_enhanced_vit', conv_stem=True, conv_stem_type='2L', cpe_act=False,
                       stem_overlapped=False, overlapped=False, last_proj=False, head_init_scale=1.)


def model_args_from_official(official_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Translate the constructor arguments of the official ``L2ViT`` class into this module's ``L2ViT`` arguments.

    Only the released configuration (conv stem '2L', mixed local/enhanced-linear blocks, one MLP ratio) is supported;
    arguments the official class accepts but ignores (``layer_scale_init_value``, ``ffn_conv``, ...) are dropped.
    """
    kwargs = {}
    for key, value in official_kwargs.items():
        if key in _OFFICIAL_FIXED:
            if value != _OFFICIAL_FIXED[key]:
                raise ValueError(f'official_kwargs: {key}={value!r} is not supported (only {_OFFICIAL_FIXED[key]!r})')
        elif key == 'mlp_ratio':
            ratios = set(value) if isinstance(value, (list, tuple)) else {value}
            if len(ratios) != 1:
                raise ValueError(f'official_kwargs: per-stage mlp_ratio must be one value, got {value}')
            kwargs['mlp_ratio'] = float(ratios.pop())
        elif key in _OFFICIAL_ARGS:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


# ----------------------------------------------------------------------------------------------------------------
# Builders, pretrained configs, registered variants
# ----------------------------------------------------------------------------------------------------------------

def _create_l2vit(variant: str, pretrained: bool = False, **kwargs) -> L2ViT:
    """``features_only=True`` defaults to ``feature_cls='getter'`` (NCHW stage outputs, trailing stages pruned)."""
    return build_staged_model(L2ViT, variant, pretrained, checkpoint_filter_fn, (2, 2, 6, 2), **kwargs)


_URL = 'https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.proj.0', 'classifier': 'head.fc',
        'license': 'mit', 'origin_url': 'https://github.com/ChuanyangZheng/L2ViT',
        'paper_ids': 'arXiv:2501.16182', 'paper_name': 'The Linear Attention Resurrection in Vision Transformer',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'l2vit_tiny.in1k': _cfg(_URL + 'L2ViT-Tiny-checkpoint-best-ema.pth'),
    'l2vit_small.in1k': _cfg(_URL + 'L2ViT-Small-checkpoint-best-ema.pth'),
    'l2vit_base.in1k': _cfg(_URL + 'L2ViT-Base-checkpoint-best-ema.pth'),
    'l2vit_base.in22k_ft_in1k': _cfg(_URL + 'L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth'),
    'l2vit_base.in22k': _cfg(
        _URL + 'L2ViT-Base-22k-pretrain-checkpoint-best.pth', num_classes=21841,
        notes='ImageNet-22k head in the repository\'s own class order (classification/custom_map22kto1k.txt '
              'maps it to ImageNet-1k), not the usual winter21 order.'),
    'l2vit_base_384.in22k_ft_in1k': _cfg(
        _URL + 'L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth',
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
})

_TINY = dict(dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


@register_model
def l2vit_tiny(pretrained: bool = False, **kwargs) -> L2ViT:
    return _create_l2vit('l2vit_tiny', pretrained, **{**_TINY, **kwargs})


@register_model
def l2vit_small(pretrained: bool = False, **kwargs) -> L2ViT:
    return _create_l2vit('l2vit_small', pretrained, **{**_SMALL, **kwargs})


@register_model
def l2vit_base(pretrained: bool = False, **kwargs) -> L2ViT:
    return _create_l2vit('l2vit_base', pretrained, **{**_BASE, **kwargs})


@register_model
def l2vit_base_384(pretrained: bool = False, **kwargs) -> L2ViT:
    """L²ViT-B for 384 px: window 12 (the official ``L2ViT_Base_384``)."""
    return _create_l2vit('l2vit_base_384', pretrained, **{**_BASE, 'window_size': 12, **kwargs})
