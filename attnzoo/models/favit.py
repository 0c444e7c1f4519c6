"""FaViT (Factorization Vision Transformer), registered in timm.

Paper: Factorization Vision Transformer: Modeling Long Range Dependency with Local Window Cost, Qin, Zhou, Xu, Bian,
Li, IEEE TNNLS 2023 - https://arxiv.org/abs/2312.08614
Official code: https://github.com/q2479036243/FaViT (no weights were released; no license file).

Architecture (official ``FaViT/classification/favit.py``, PVTv2 layout):

* Stage ``i``: overlapping patch embedding (conv7x7/s4 for the stem, conv3x3/s2 after), LayerNorm; blocks
  ``x = x + FaSA(norm1(x))``, ``x = x + Mlp(norm2(x))`` with PVTv2's convolutional MLP (fc1 -> dwconv3x3 -> GELU
  -> fc2); the stage ends with a LayerNorm **in the main path** (its output feeds the next stage).
* FaSA (``attnzoo.ops.FactorizedSelfAttention``): a one-head spatial-reduction group plus one or two "factorized"
  local groups in which every query attends to the same 49 keys per head.
* Head: mean over the tokens of the last (normed) stage, linear classifier.

Inputs must be at least 97x97 px (any larger size works): below that the reflection padding of the local groups is
larger than a stage map, which crashes the official code; here it raises a ``ValueError`` naming the minimum.

All maps inside the model are channels-last ``[B, H, W, C]`` (``output_fmt = 'NHWC'``). Layout differences from the
official keys (``checkpoint_filter_fn`` converts): ``patch_embed1`` -> ``stem``, ``patch_embed{i+1}`` ->
``stages.i.downsample``, ``block{i+1}.j`` -> ``stages.i.blocks.j``, ``norm{i+1}`` -> ``stages.i.norm``,
``head`` -> ``head.fc``.
"""
import math
from functools import partial
from typing import Any, Dict, Sequence, Type, Union

import torch
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, calculate_drop_path_rates, register_notrace_function
from timm.models import checkpoint_seq, generate_default_cfgs, named_apply, register_model

from attnzoo.ops.factorized import FactorizedSelfAttention

from ._base import (
    build_staged_model, StagedClassifier, check_drop_rates, check_image_batch, remap_state_dict, unwrap_state_dict)

__all__ = ['FaViT', 'checkpoint_filter_fn']


@register_notrace_function
def check_min_input_size(x: torch.Tensor, min_size: int) -> None:
    """Raise a named error when an image side is below the smallest size the model accepts."""
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f'x: FaViT needs images of at least {min_size}x{min_size} px, got {x.shape[-2]}x{x.shape[-1]}: below that '
            f'the reflection padding of its factorized attention is larger than a stage map')


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel ``patch_size``, stride, padding ``patch_size // 2``) + LayerNorm.

    The LayerNorm has PyTorch's default eps 1e-5 in every configuration (the official class ignores ``norm_layer``).

    ``[B, C, H, W]`` (stem) or ``[B, H, W, C]`` (between stages) -> ``[B, H', W', embed_dim]``.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, channels_last_input: bool,
                 min_input_size: int = 0, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.in_chans = in_chans
        self.channels_last_input = channels_last_input
        self.min_input_size = min_input_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2, **dd)
        self.norm = nn.LayerNorm(embed_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_input:
            x = x.permute(0, 3, 1, 2)
        else:
            check_image_batch(x, self.in_chans)
            check_min_input_size(x, self.min_input_size)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class _DWConv(nn.Module):
    """Holds the MLP's depthwise conv under the official key ``mlp.dwconv.dwconv``."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, device=device, dtype=dtype)


class ConvMlp(nn.Module):
    """PVTv2's MLP: fc1 -> depthwise conv3x3 (``dwconv.dwconv``) -> GELU -> fc2, on ``[B, H, W, C]``."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: Type[nn.Module] = nn.GELU, drop: float = 0.,
                 device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, **dd)
        self.dwconv = _DWConv(hidden_dim, **dd)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.dwconv.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class FaViTBlock(nn.Module):
    """``x = x + drop_path(FaSA(norm1(x)))``, ``x = x + drop_path(mlp(norm2(x)))`` on ``[B, H, W, C]``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 window_size: int = 7, proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 act_layer: Type[nn.Module] = nn.GELU, norm_layer: Type[nn.Module] = nn.LayerNorm,
                 device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm1 = norm_layer(dim, **dd)
        self.attn = FactorizedSelfAttention(dim, num_heads, sr_ratio, window_size, qkv_bias=qkv_bias,
                                            attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FaViTStage(nn.Module):
    """Patch embedding (stages 2-4; stage 1's is the model's stem), FaSA blocks, stage LayerNorm."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, sr_ratio: int, mlp_ratio: float,
                 downsample: bool, qkv_bias: bool = True, window_size: int = 7, proj_drop: float = 0.,
                 attn_drop: float = 0., drop_path: Union[float, Sequence[float]] = 0.,
                 act_layer: Type[nn.Module] = nn.GELU, norm_layer: Type[nn.Module] = nn.LayerNorm,
                 device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = OverlapPatchEmbed(dim, out_dim, 3, 2, True, **dd) if downsample else nn.Identity()
        drop_paths = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.Sequential(*[
            FaViTBlock(out_dim, num_heads, sr_ratio, mlp_ratio, qkv_bias, window_size, proj_drop, attn_drop,
                       drop_paths[j], act_layer, norm_layer, **dd)
            for j in range(depth)])
        self.norm = norm_layer(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


def _init_weights(module: nn.Module, name: str = '') -> None:
    """Official init: Linear trunc_normal(std=.02) with zero bias; Conv2d normal(0, sqrt(2/fan_out)) with zero bias
    (fan_out = k*k*out/groups); LayerNorm ones/zeros."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def favit_min_input_size(sr_ratios: Sequence[int], window_size: int = 7) -> int:
    """Smallest image side a FaViT accepts: stage ``i`` (stride ``4 * 2**i``, map side ``ceil(H / stride)``) must
    be at least the smallest side its factorized attention accepts (97 px for the released configurations)."""
    from attnzoo.ops.factorized import factorized_min_size
    need = 1
    for i, r in enumerate(sr_ratios):
        dilations = [1, r] if r > 1 else [1]
        side = max([r] + [factorized_min_size(window_size, d) for d in dilations])
        need = max(need, (side - 1) * 4 * 2 ** i + 1)
    return need


class FaViT(StagedClassifier):
    """Factorization Vision Transformer (the official ``FactorizationTransformer``).

    Input ``[B, in_chans, H, W]`` with ``H, W >= min_input_size`` (97 for the released configurations); stage ``i``
    maps are ``[B, ceil(H/(4*2^i)), ceil(W/(4*2^i)), embed_dims[i]]`` (channels-last), each ending with its norm.
    That norm is in the main path (it feeds the next stage), so the model's final ``norm`` is an ``Identity``:
    ``forward_intermediates`` returns the normed stage outputs whatever its ``norm`` argument. Only timm's default
    (1-d parameters) is excluded from weight decay, as in the official DeiT/PVT recipe.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (1, 2, 4, 8),
            mlp_ratios: Sequence[float] = (8, 6, 4, 4),
            sr_ratios: Sequence[int] = (8, 4, 2, 1),
            window_size: int = 7,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            act_layer: Type[nn.Module] = nn.GELU,
            norm_layer: Type[nn.Module] = partial(nn.LayerNorm, eps=1e-6),
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Input image channels.
            num_classes: Classifier outputs (0: no classifier).
            global_pool: Pooling type of the head ('avg': the official token mean).
            embed_dims: Channels per stage (multiples of 16, of 8 where ``sr_ratio == 1``).
            depths: Blocks per stage.
            num_heads: Heads of the local groups per stage (the global group always has one head).
            mlp_ratios: MLP hidden width / block width, per stage.
            sr_ratios: Spatial reduction of the global group and dilation of the second local group, per stage.
            window_size: Side of the factorized key grid (7).
            qkv_bias: Bias in q / kv_g / fcs / single_heads.
            drop_rate: Dropout before the classifier.
            proj_drop_rate: Dropout after the attention projection and in the MLPs (official ``drop_rate``).
            attn_drop_rate: Dropout on the attention weights.
            drop_path_rate: Stochastic depth, linear from 0 over all blocks.
            act_layer: MLP activation.
            norm_layer: Normalization layer of the blocks and stage ends (LayerNorm eps 1e-6 in every released
                configuration; the patch embeddings and the attention's ``norm`` keep eps 1e-5, as officially).
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        num_stages = len(depths)
        for name, values in (('embed_dims', embed_dims), ('num_heads', num_heads), ('mlp_ratios', mlp_ratios),
                             ('sr_ratios', sr_ratios)):
            if len(values) != num_stages:
                raise ValueError(f'{name}: expected one value per stage ({num_stages} stages from depths='
                                 f'{list(depths)}), got {len(values)}: {list(values)}')
        self.in_chans = in_chans
        self.num_features = embed_dims[-1]
        self.min_input_size = favit_min_input_size(sr_ratios, window_size)

        self.stem = OverlapPatchEmbed(in_chans, embed_dims[0], 7, 4, False, min_input_size=self.min_input_size, **dd)
        check_drop_rates(drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        self.feature_info = []
        for i in range(num_stages):
            stages.append(FaViTStage(
                dim=embed_dims[max(i - 1, 0)],
                out_dim=embed_dims[i],
                depth=depths[i],
                num_heads=num_heads[i],
                sr_ratio=sr_ratios[i],
                mlp_ratio=mlp_ratios[i],
                downsample=i > 0,
                qkv_bias=qkv_bias,
                window_size=window_size,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                act_layer=act_layer,
                norm_layer=norm_layer,
                **dd,
            ))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()  # every stage ends with its own norm
        self._init_head(num_classes, global_pool, drop_rate, **dd)
        named_apply(_init_weights, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise LR decay; each stage's norm closes its stage's group."""
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^stages\.(\d+)\.norm', (99999,)),
            ]
        )


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

_RENAMES = (
    (r'^module\.', ''),
    (r'^patch_embed1\.', 'stem.'),
    (r'^patch_embed(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.'),
    (r'^block(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.'),
    (r'^norm(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.norm.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Convert an official-format FaViT state dict (bare, or wrapped in ``'model'`` / ``'state_dict'`` as the
    official detection / segmentation code expects) to this model's keys; this module's own format passes through.

    Raises:
        ValueError: listing every key that does not map onto a parameter or buffer of ``model``.
    """
    state_dict = unwrap_state_dict(state_dict, ('model', 'state_dict', 'model_ema'))
    return remap_state_dict(state_dict, model, _RENAMES, 'another variant or configuration?')


_OFFICIAL_ARGS = {'embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios', 'qkv_bias', 'num_classes',
                  'in_chans', 'drop_path_rate', 'attn_drop_rate'}


def model_args_from_official(official_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Translate ``FactorizationTransformer`` constructor arguments into ``FaViT`` arguments (``img_size``,
    ``patch_size``, ``qk_scale`` and ``num_stages`` are unused by the official model and dropped)."""
    kwargs = {}
    for key, value in official_kwargs.items():
        if key == 'drop_rate':
            kwargs['proj_drop_rate'] = value
        elif key in _OFFICIAL_ARGS:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif key == 'patch_size' and value != 4:
            raise ValueError(f'official_kwargs: patch_size must be 4, got {value}')
    return kwargs


# ----------------------------------------------------------------------------------------------------------------
# Builders, pretrained configs, registered variants
# ----------------------------------------------------------------------------------------------------------------

def _create_favit(variant: str, pretrained: bool = False, **kwargs) -> FaViT:
    return build_staged_model(FaViT, variant, pretrained, checkpoint_filter_fn, (2, 2, 6, 2), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'min_input_size': (3, 97, 97), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.proj', 'classifier': 'head.fc',
        'license': 'unknown', 'origin_url': 'https://github.com/q2479036243/FaViT',
        'paper_ids': 'arXiv:2312.08614',
        'paper_name': 'Factorization Vision Transformer: Modeling Long Range Dependency with Local Window Cost',
        'notes': 'No official weights were released.',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'favit_b0.untrained': _cfg(),
    'favit_b1.untrained': _cfg(),
    'favit_b2.untrained': _cfg(),
    'favit_b3.untrained': _cfg(),
})

_COMMON = dict(num_heads=(1, 2, 4, 8), mlp_ratios=(8, 6, 4, 4), sr_ratios=(8, 4, 2, 1))


@register_model
def favit_b0(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit('favit_b0', pretrained, **{**_COMMON, 'embed_dims': (32, 64, 128, 256),
                                                     'depths': (2, 2, 6, 2), **kwargs})


@register_model
def favit_b1(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit('favit_b1', pretrained, **{**_COMMON, 'embed_dims': (64, 128, 256, 512),
                                                     'depths': (2, 2, 6, 2), **kwargs})


@register_model
def favit_b2(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit('favit_b2', pretrained, **{**_COMMON, 'embed_dims': (64, 128, 256, 512),
                                                     'depths': (2, 3, 18, 3), **kwargs})


@register_model
def favit_b3(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit('favit_b3', pretrained, **{**_COMMON, 'embed_dims': (96, 192, 384, 768),
                                                     'depths': (2, 3, 14, 3), **kwargs})
