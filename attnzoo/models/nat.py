"""NAT, DiNAT, DiNAT_s and isotropic NAT/DiNAT, registered in timm.

Papers:
    Neighborhood Attention Transformer (NAT), Hassani et al., CVPR 2023 - https://arxiv.org/abs/2204.07143
    Dilated Neighborhood Attention Transformer (DiNAT), Hassani & Shi, 2022 - https://arxiv.org/abs/2209.15001
Official code and weights (MIT): https://github.com/SHI-Labs/Neighborhood-Attention-Transformer

Two model classes cover every released variant:

* ``NAT``: the hierarchical 4-stage model. With ``stem_type='conv'`` / ``downsample_type='conv'`` it is
  NAT / DiNAT (two overlapping 3x3 stride-2 stem convs, 3x3 stride-2 conv downsampler); with ``'patch'`` /
  ``'merge'`` it is DiNAT_s (4x4 patchify stem, Swin patch merging). DiNAT is NAT with per-layer dilations.
* ``NATIsotropic``: a ViT-like single-resolution stack of NA blocks on a patch-16 grid.

All feature maps inside the models are channels-last ``[B, H, W, C]``; ``forward_features`` returns that layout
(``output_fmt = 'NHWC'``), ``forward_intermediates`` / ``features_only`` return NCHW maps by default.

Layout differences from the official code (``checkpoint_filter_fn`` converts the official weights):
``patch_embed`` -> ``stem``; downsamplers sit at the *start* of the next stage (``levels.i.downsample`` ->
``stages.i+1.downsample``); ``gamma1/2`` -> ``ls1/2.gamma``; ``head`` -> ``head.fc``; isotropic ``layers.i`` ->
``blocks.i``.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerScale, Mlp, calculate_drop_path_rates, trunc_normal_
from timm.models import (
    build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, named_apply, register_model)
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import PatchMerging

from attnzoo.ops import NeighborhoodAttention2D

from ._base import (
    PooledClassifier, StagedClassifier, build_staged_model, check_drop_rates, check_image_batch, pop_out_indices,
    remap_state_dict, unwrap_state_dict)
from ._pretrained import resolve_pretrained

__all__ = ['NAT', 'NATIsotropic', 'checkpoint_filter_fn', 'dinat_dense_dilations', 'dinat_dense_kwargs']


# ----------------------------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------------------------

def _check_stage_args(depths: Sequence[int], num_heads: Sequence[int], dilations: Sequence[Sequence[int]]) -> None:
    """Check that ``num_heads`` and ``dilations`` give one entry per stage and one dilation per layer."""
    if len(num_heads) != len(depths):
        raise ValueError(
            f'num_heads: expected one value per stage ({len(depths)} stages from depths={list(depths)}), '
            f'got {len(num_heads)}: {list(num_heads)}')
    if len(dilations) != len(depths):
        raise ValueError(
            f'dilations: expected one list per stage ({len(depths)} stages from depths={list(depths)}), '
            f'got {len(dilations)} lists')
    for i, (depth, stage_dilations) in enumerate(zip(depths, dilations)):
        _check_layer_dilations(f'dilations[{i}]', stage_dilations, depth)


def _check_layer_dilations(name: str, dilations: Sequence[int], depth: int) -> None:
    """Check one dilation list: ``depth`` integers, each >= 1."""
    if len(dilations) != depth:
        raise ValueError(f'{name}: expected {depth} values (one per layer), got {len(dilations)}: {list(dilations)}')
    for d in dilations:
        if int(d) != d or d < 1:
            raise ValueError(f'{name}: every dilation must be an integer >= 1, got {list(dilations)}')


def alternating_dilations(depths: Sequence[int], dilated: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    """DiNAT's NA/DiNA alternation: per stage, even layers use dilation 1 and odd layers ``dilated[stage]``.

    Args:
        depths: Layers per stage.
        dilated: Dilation of the odd (DiNA) layers of each stage; the released models use
            ``floor(stage_map_size / kernel_size)``, e.g. (8, 4, 2, 1) at 224 px with kernel 7.

    Returns:
        One tuple of per-layer dilations per stage.
    """
    if len(dilated) != len(depths):
        raise ValueError(f'dilated: expected one value per stage ({len(depths)}), got {len(dilated)}')
    return tuple(tuple(1 if j % 2 == 0 else d for j in range(depth)) for depth, d in zip(depths, dilated))


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------

class ConvStem(nn.Module):
    """NAT's overlapping tokenizer: two 3x3 stride-2 convs (no activation between them), then LayerNorm.

    ``[B, in_chans, H, W]`` -> ``[B, ceil(H/4), ceil(W/4), embed_dim]`` (channels-last).
    """

    def __init__(
            self,
            in_chans: int,
            embed_dim: int,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1, **dd),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1, **dd),
        )
        self.norm = norm_layer(embed_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchStem(nn.Module):
    """Non-overlapping patchify stem (DiNAT_s, isotropic): right/bottom zero-pad to a multiple of the patch
    size, ``patch_size`` x ``patch_size`` stride-``patch_size`` conv, LayerNorm.

    ``[B, in_chans, H, W]`` -> ``[B, ceil(H/p), ceil(W/p), embed_dim]`` (channels-last).
    """

    def __init__(
            self,
            in_chans: int,
            embed_dim: int,
            patch_size: int,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = norm_layer(embed_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans)
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsample(nn.Module):
    """NAT's downsampler: 3x3 stride-2 conv without bias, then LayerNorm (post-conv).

    ``[B, H, W, C]`` -> ``[B, ceil(H/2), ceil(W/2), out_dim]`` (channels-last).
    """

    def __init__(
            self,
            dim: int,
            out_dim: int,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, bias=False, **dd)
        self.norm = norm_layer(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class NATBlock(nn.Module):
    """Pre-norm transformer block with (dilated) neighborhood attention.

    ``x = x + drop_path(ls1(attn(norm1(x))))``, ``x = x + drop_path(ls2(mlp(norm2(x))))``;
    ``[B, H, W, C]`` -> ``[B, H, W, C]``. Layer scale (``ls1``/``ls2``) only when ``layer_scale_init_value`` is set.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: int = 7,
            dilation: int = 1,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            layer_scale_init_value: Optional[float] = None,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Type[nn.Module] = nn.GELU,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm1 = norm_layer(dim, **dd)
        self.attn = NeighborhoodAttention2D(
            dim,
            num_heads,
            kernel_size,
            dilation=dilation,
            qkv_bias=qkv_bias,
            rel_pos_bias=True,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            **dd,
        )
        self.ls1 = _layer_scale(dim, layer_scale_init_value, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.ls2 = _layer_scale(dim, layer_scale_init_value, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def _make_blocks(dim: int, num_heads: int, kernel_size: int, dilations: Sequence[int], drop_paths: Sequence[float],
                 **block_kwargs) -> nn.Sequential:
    """``len(dilations)`` NAT blocks of width ``dim``, block ``i`` with ``dilations[i]`` and ``drop_paths[i]``."""
    return nn.Sequential(*[
        NATBlock(dim, num_heads, kernel_size=kernel_size, dilation=d, drop_path=dp, **block_kwargs)
        for d, dp in zip(dilations, drop_paths)])


def _layer_scale(dim: int, init_value: Optional[float], device=None, dtype=None) -> nn.Module:
    """``LayerScale`` (per-channel gamma, the official ``gamma1/2``) or ``Identity`` when ``init_value`` is None."""
    if init_value is None:
        return nn.Identity()
    return LayerScale(dim, init_value, device=device, dtype=dtype)


class NATStage(nn.Module):
    """One stage: optional downsampler (``'conv'`` or ``'merge'``) followed by NA blocks.

    ``[B, H, W, in_dim]`` -> ``[B, H', W', out_dim]`` with ``H' = ceil(H/2)`` when downsampling, else ``H``.
    """

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            num_heads: int,
            kernel_size: int,
            dilations: Sequence[int],
            downsample: Optional[str] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            layer_scale_init_value: Optional[float] = None,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: Union[float, Sequence[float]] = 0.,
            act_layer: Type[nn.Module] = nn.GELU,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = _make_downsample(downsample, dim, out_dim, norm_layer, **dd)
        drop_paths = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = _make_blocks(out_dim, num_heads, kernel_size, dilations, drop_paths, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, layer_scale_init_value=layer_scale_init_value,
                                   proj_drop=proj_drop, attn_drop=attn_drop, act_layer=act_layer,
                                   norm_layer=norm_layer, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


_DOWNSAMPLE_TYPES = ('conv', 'merge')
_STEM_TYPES = ('conv', 'patch')


def _make_downsample(
        kind: Optional[str],
        dim: int,
        out_dim: int,
        norm_layer: Type[nn.Module],
        device=None,
        dtype=None,
) -> nn.Module:
    """Downsampler by name: None -> Identity (dims must match), 'conv' -> ``ConvDownsample``, 'merge' -> Swin
    ``PatchMerging`` (2x2 concat, LayerNorm(4C), bias-free Linear; pads odd maps)."""
    if kind is None:
        if dim != out_dim:
            raise ValueError(f'downsample: None requires dim == out_dim, got {dim} and {out_dim}')
        return nn.Identity()
    if kind == 'conv':
        return ConvDownsample(dim, out_dim, norm_layer, device=device, dtype=dtype)
    if kind == 'merge':
        return PatchMerging(dim, out_dim, norm_layer, device=device, dtype=dtype)
    raise ValueError(f'downsample_type: expected one of {_DOWNSAMPLE_TYPES}, got {kind!r}')


def _init_weights(module: nn.Module, name: str = '') -> None:
    """Official init: Linear weights trunc_normal(std=.02) with zero bias; LayerNorm, convs and ``rpb`` keep
    their own initialisation (the NA module draws ``rpb`` from trunc_normal(std=.02))."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

class NAT(StagedClassifier):
    """Hierarchical Neighborhood Attention Transformer: NAT, DiNAT (``dilations``) and DiNAT_s (``stem_type='patch'``,
    ``downsample_type='merge'``).

    Input ``[B, in_chans, H, W]``; stage ``i`` maps are ``[B, H/(4*2^i), W/(4*2^i), embed_dim*2^i]`` (ceil-rounded,
    channels-last). Any input size works: where a map is smaller than ``kernel_size * dilation`` the attention
    layer zero-pads it right/bottom after the norm and crops before the projection, as the released weights
    expect.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depths: Sequence[int] = (3, 4, 6, 5),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            kernel_size: int = 7,
            dilations: Optional[Sequence[Sequence[int]]] = None,
            mlp_ratio: float = 3.,
            qkv_bias: bool = True,
            layer_scale_init_value: Optional[float] = None,
            stem_type: str = 'conv',
            downsample_type: str = 'conv',
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
            embed_dim: Channels of stage 0; stage ``i`` has ``embed_dim * 2**i``.
            depths: Blocks per stage.
            num_heads: Attention heads per stage.
            kernel_size: Neighborhood size (odd).
            dilations: Per stage, one dilation per block (DiNAT); None means 1 everywhere (NAT).
            mlp_ratio: MLP hidden width / block width.
            qkv_bias: Bias in the qkv projection.
            layer_scale_init_value: Init of the per-channel layer scale; None disables it.
            stem_type: 'conv' (NAT: two overlapping 3x3 stride-2 convs) or 'patch' (DiNAT_s: 4x4 patchify).
            downsample_type: 'conv' (NAT: 3x3 stride-2 conv + LayerNorm) or 'merge' (DiNAT_s: Swin patch merging).
            drop_rate: Dropout before the classifier.
            proj_drop_rate: Dropout after the attention projection and in the MLP.
            attn_drop_rate: Dropout on the attention weights.
            drop_path_rate: Stochastic depth, linear from 0 over all blocks.
            act_layer: MLP activation.
            norm_layer: Normalization layer (over the channel dim of NHWC maps).
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        num_stages = len(depths)
        dilations = tuple(tuple(1 for _ in range(d)) for d in depths) if dilations is None else dilations
        _check_stage_args(depths, num_heads, dilations)
        if stem_type not in _STEM_TYPES:
            raise ValueError(f'stem_type: expected one of {_STEM_TYPES}, got {stem_type!r}')
        if downsample_type not in _DOWNSAMPLE_TYPES:
            raise ValueError(f'downsample_type: expected one of {_DOWNSAMPLE_TYPES}, got {downsample_type!r}')

        self.in_chans = in_chans
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.num_features = dims[-1]

        if stem_type == 'conv':
            self.stem = ConvStem(in_chans, embed_dim, norm_layer, **dd)
        else:
            self.stem = PatchStem(in_chans, embed_dim, 4, norm_layer, **dd)

        check_drop_rates(drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        self.feature_info = []
        for i in range(num_stages):
            stages.append(NATStage(
                dim=dims[max(i - 1, 0)],
                out_dim=dims[i],
                depth=depths[i],
                num_heads=num_heads[i],
                kernel_size=kernel_size,
                dilations=dilations[i],
                downsample=downsample_type if i > 0 else None,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                layer_scale_init_value=layer_scale_init_value,
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


class NATIsotropic(PooledClassifier):
    """Isotropic (ViT-like) NAT / DiNAT: patch-16 stem, ``depth`` NA blocks at one resolution, no class token.

    Input ``[B, in_chans, H, W]``; every block maps ``[B, ceil(H/16), ceil(W/16), embed_dim]`` to the same shape.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            patch_size: int = 16,
            embed_dim: int = 384,
            depth: int = 12,
            num_heads: int = 12,
            kernel_size: int = 7,
            dilations: Optional[Sequence[int]] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            layer_scale_init_value: Optional[float] = None,
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
            num_classes: Classifier outputs (0: no classifier).
            global_pool: Pooling type of the head.
            patch_size: Stem patch size (the feature stride).
            embed_dim: Channels of every block.
            depth: Number of blocks.
            num_heads: Attention heads.
            kernel_size: Neighborhood size (odd).
            dilations: One dilation per block; None means 1 everywhere (isotropic NAT). Isotropic DiNAT
                alternates 1 and 2.
            mlp_ratio: MLP hidden width / embed_dim.
            qkv_bias: Bias in the qkv projection.
            layer_scale_init_value: Init of the per-channel layer scale; None disables it.
            drop_rate: Dropout before the classifier.
            proj_drop_rate: Dropout after the attention projection and in the MLP.
            attn_drop_rate: Dropout on the attention weights.
            drop_path_rate: Stochastic depth, linear from 0 over the blocks.
            act_layer: MLP activation.
            norm_layer: Normalization layer.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        dilations = (1,) * depth if dilations is None else tuple(dilations)
        _check_layer_dilations('dilations', dilations, depth)
        self.in_chans = in_chans
        self.num_features = embed_dim
        self.grad_checkpointing = False

        self.stem = PatchStem(in_chans, embed_dim, patch_size, norm_layer, **dd)
        check_drop_rates(drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = _make_blocks(embed_dim, num_heads, kernel_size, dilations, dpr, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, layer_scale_init_value=layer_scale_init_value,
                                   proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, act_layer=act_layer,
                                   norm_layer=norm_layer, **dd)
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm_layer(embed_dim, **dd)
        self._init_head(num_classes, global_pool, drop_rate, **dd)
        named_apply(_init_weights, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise LR decay: stem, then one group per block."""
        return dict(stem=r'^stem', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the blocks in the backward pass instead of storing activations."""
        self.grad_checkpointing = enable

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward pass returning per-block feature maps.

        Args:
            x: Images ``[B, in_chans, H, W]``.
            indices: Blocks to return: last ``n`` if int, these (negative allowed) if a list, all if None.
            norm: Apply the final norm to every returned map.
            stop_early: Stop after the last requested block.
            output_fmt: 'NCHW' (``[B, C, H/16, W/16]``) or 'NHWC'.
            intermediates_only: Return only the list of maps.

        Returns:
            The list of maps, or ``(final_features [B, H/16, W/16, C], maps)``.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        intermediates = []
        x = self.stem(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                x_inter = self.norm(x) if norm else x
                intermediates.append(x_inter.permute(0, 3, 1, 2).contiguous() if output_fmt == 'NCHW' else x_inter)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last one in ``indices`` (and norm / head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> final normed map ``[B, H/16, W/16, embed_dim]`` (channels-last)."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

# (pattern, replacement) applied in order to every official key; our own keys match none of them.
_HIERARCHICAL_RENAMES = (
    (r'^patch_embed\.', 'stem.'),
    (r'^(?:levels|layers)\.(\d+)\.downsample\.', lambda m: f'stages.{int(m.group(1)) + 1}.downsample.'),
    (r'^(?:levels|layers)\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
    (r'\.gamma1$', '.ls1.gamma'),
    (r'\.gamma2$', '.ls2.gamma'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
)
_ISOTROPIC_RENAMES = (
    (r'^patch_embed\.', 'stem.'),
    (r'^layers\.(\d+)\.', r'blocks.\1.'),
    (r'\.gamma1$', '.ls1.gamma'),
    (r'\.gamma2$', '.ls2.gamma'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
)


def resize_rpb(rpb: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resize an RPB table ``[heads, 2k-1, 2k-1]`` to ``[heads, *size]`` (Swin's interpolation; the
    official 11x11 ImageNet-22K checkpoint was made this way from the 7x7 one)."""
    resized = F.interpolate(rpb[None].float(), size=size, mode='bicubic', align_corners=False)
    return resized[0].to(rpb.dtype)


def _resize_rpb_to(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``remap_state_dict`` adapter: RPB tables of another kernel size are resized to the model's."""
    if key.endswith('.rpb') and value.shape != target.shape:
        return resize_rpb(value, tuple(target.shape[-2:]))
    return value


_OFFICIAL_ARG_NAMES = {  # official constructor argument -> ours (same meaning)
    'num_classes': 'num_classes', 'in_chans': 'in_chans', 'embed_dim': 'embed_dim', 'mlp_ratio': 'mlp_ratio',
    'num_heads': 'num_heads', 'kernel_size': 'kernel_size', 'qkv_bias': 'qkv_bias', 'drop_rate': 'proj_drop_rate',
    'attn_drop_rate': 'attn_drop_rate', 'drop_path_rate': 'drop_path_rate', 'layer_scale': 'layer_scale_init_value',
    'depths': 'depths', 'depth': 'depth', 'dilations': 'dilations', 'patch_size': 'patch_size',
}
_OFFICIAL_CLASSES = ('NAT', 'DiNAT', 'DiNAT_s', 'NATIsotropic')


def model_args_from_official(official_class: str, official_kwargs: Dict[str, Any]) -> Tuple[type, Dict[str, Any]]:
    """Translate the constructor arguments of an official model into this module's class and arguments.

    Args:
        official_class: ``'NAT'``, ``'DiNAT'`` (classification/{nat,dinat}.py), ``'DiNAT_s'`` (dinats.py) or
            ``'NATIsotropic'`` (isotropic.py).
        official_kwargs: Its keyword arguments (``qk_scale`` must be None: the models use ``head_dim**-0.5``).

    Returns:
        ``(NAT or NATIsotropic, kwargs)`` building the same network.
    """
    if official_class not in _OFFICIAL_CLASSES:
        raise ValueError(f'official_class: expected one of {_OFFICIAL_CLASSES}, got {official_class!r}')
    official_kwargs = dict(official_kwargs)
    if official_kwargs.pop('qk_scale', None) is not None:
        raise ValueError('official_kwargs: qk_scale other than None is not supported (scale is head_dim**-0.5)')
    unknown = sorted(set(official_kwargs) - set(_OFFICIAL_ARG_NAMES) - {'dilation', 'img_size'})
    if unknown:
        raise ValueError(f'official_kwargs: unsupported argument(s) {unknown} for {official_class}')
    kwargs = {_OFFICIAL_ARG_NAMES[k]: v for k, v in official_kwargs.items() if k in _OFFICIAL_ARG_NAMES}
    if official_class == 'NATIsotropic':
        dilation = official_kwargs.get('dilation', 2)  # isotropic.py: odd blocks use `dilation`
        kwargs['dilations'] = tuple(1 if i % 2 == 0 else dilation for i in range(kwargs.get('depth', 12)))
        return NATIsotropic, kwargs
    if kwargs.pop('patch_size', 4) != 4:
        raise ValueError('official_kwargs: patch_size must be 4 for the hierarchical models')
    if official_class == 'DiNAT_s':
        kwargs.update(stem_type='patch', downsample_type='merge')
    return NAT, kwargs


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Convert an official NAT / DiNAT / DiNAT_s / isotropic checkpoint to this model's keys.

    Accepts bare state dicts and ``'model'`` / ``'state_dict'`` / ``'params_ema'`` wrappers, is the identity on
    this module's own format (headless included) and bicubically resizes RPB tables to the model's kernel size.
    Classifier keys (``head.fc.*``) pass through even when the model has no classifier (timm's loader drops them
    when the class count differs).

    Raises:
        ValueError: listing every key that does not map onto a parameter or buffer of ``model``.
    """
    state_dict = unwrap_state_dict(state_dict, ('model', 'state_dict', 'params_ema'), nested=True)
    renames = _ISOTROPIC_RENAMES if isinstance(model, NATIsotropic) else _HIERARCHICAL_RENAMES
    return remap_state_dict(
        state_dict, model, renames,
        'is the checkpoint for another variant, or a detection/segmentation checkpoint?', adapt=_resize_rpb_to)


# ----------------------------------------------------------------------------------------------------------------
# Builders, pretrained configs, registered variants
# ----------------------------------------------------------------------------------------------------------------

def _create_nat(variant: str, pretrained: bool = False, **kwargs) -> NAT:
    """Build a hierarchical variant. ``features_only=True`` defaults to ``feature_cls='getter'`` (NCHW maps from
    ``forward_intermediates``, unused trailing stages pruned); ``feature_cls='list'`` gives timm's
    ``FeatureListNet``, which like Swin returns the stages' native NHWC maps (its ``output_fmt`` says so)."""
    return build_staged_model(NAT, variant, pretrained, checkpoint_filter_fn, (3, 4, 6, 5), **kwargs)


def _create_nat_isotropic(variant: str, pretrained: bool = False, **kwargs) -> NATIsotropic:
    """Build an isotropic variant (``kwargs`` hold its ``depth``). ``features_only=True``: timm's getter over the
    blocks, by default the last 3; ``out_indices`` is checked by ``check_out_indices``."""
    out_indices = pop_out_indices(kwargs, kwargs['depth'], 3)
    resolve_pretrained(variant, pretrained, kwargs)  # the file through attnzoo's checkpoint loader
    return build_model_with_cfg(
        NATIsotropic, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
        **kwargs)


_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'
_ORIGIN = 'https://github.com/SHI-Labs/Neighborhood-Attention-Transformer'
_NAT_PAPER = dict(paper_ids='arXiv:2204.07143', paper_name='Neighborhood Attention Transformer')
_DINAT_PAPER = dict(paper_ids='arXiv:2209.15001', paper_name='Dilated Neighborhood Attention Transformer')


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.proj.0', 'classifier': 'head.fc',
        'license': 'mit', 'origin_url': _ORIGIN, **_DINAT_PAPER, **kwargs,
    }


def _cfg_384(url: str, **kwargs) -> Dict[str, Any]:
    return _cfg(url, input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, **kwargs)


def _cfg_22k(url: str, **kwargs) -> Dict[str, Any]:
    return _cfg(url, num_classes=21841, **kwargs)


_PATCH_STEM = dict(first_conv='stem.proj')
_ISOTROPIC = dict(first_conv='stem.proj', pool_size=(14, 14))

default_cfgs = generate_default_cfgs({
    'nat_mini.in1k': _cfg(_NAT_URL + 'nat_mini.pth', **_NAT_PAPER),
    'nat_tiny.in1k': _cfg(_NAT_URL + 'nat_tiny.pth', **_NAT_PAPER),
    'nat_small.in1k': _cfg(_NAT_URL + 'nat_small.pth', **_NAT_PAPER),
    'nat_base.in1k': _cfg(_NAT_URL + 'nat_base.pth', **_NAT_PAPER),

    'dinat_mini.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_mini_in1k_224.pth'),
    'dinat_tiny.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_tiny_in1k_224.pth'),
    'dinat_small.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_small_in1k_224.pth'),
    'dinat_base.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_base_in1k_224.pth'),
    'dinat_large.in22k_ft_in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_224.pth'),
    'dinat_large.in22k': _cfg_22k(_DINAT_URL + 'imagenet22k/dinat_large_in22k_224.pth'),
    'dinat_large_384.in22k_ft_in1k': _cfg_384(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384.pth'),
    'dinat_large_384_11x11.in22k_ft_in1k': _cfg_384(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384_11x11.pth'),
    'dinat_large_11x11.in22k': _cfg_22k(
        _DINAT_URL + 'imagenet22k/dinat_large_in22k_224_11x11interp.pth',
        notes='The 7x7 ImageNet-22K weights with RPB bicubically resized to 11x11; meant for fine-tuning at 384 '
              '(dilations 8/4/2/1 exceed the 224 px maps, which the attention layers zero-pad).'),

    'dinat_s_tiny.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_s_tiny_in1k_224.pth', **_PATCH_STEM),
    'dinat_s_small.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_s_small_in1k_224.pth', **_PATCH_STEM),
    'dinat_s_base.in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_s_base_in1k_224.pth', **_PATCH_STEM),
    'dinat_s_large.in22k_ft_in1k': _cfg(_DINAT_URL + 'imagenet1k/dinat_s_large_in1k_224.pth', **_PATCH_STEM),
    'dinat_s_large.in22k': _cfg_22k(_DINAT_URL + 'imagenet22k/dinat_s_large_in22k_224.pth', **_PATCH_STEM),
    'dinat_s_large_384.in22k_ft_in1k': _cfg_384(_DINAT_URL + 'imagenet1k/dinat_s_large_in1k_384.pth', **_PATCH_STEM),

    'nat_isotropic_small.in1k': _cfg(_DINAT_URL + 'isotropic/nat_isotropic_small_in1k_224.pth', **_ISOTROPIC),
    'nat_isotropic_base.in1k': _cfg(_DINAT_URL + 'isotropic/nat_isotropic_base_in1k_224.pth', **_ISOTROPIC),
    'dinat_isotropic_small.in1k': _cfg(_DINAT_URL + 'isotropic/dinat_isotropic_small_in1k_224.pth', **_ISOTROPIC),
    'dinat_isotropic_base.in1k': _cfg(_DINAT_URL + 'isotropic/dinat_isotropic_base_in1k_224.pth', **_ISOTROPIC),
})

# Architectures (official classification/{nat,dinat,dinats,isotropic}.py). Training-only settings such as the
# drop-path rate are left to the training configs.
_MINI = dict(depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3.)
_TINY = dict(depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3.)
_SMALL = dict(depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), embed_dim=96, mlp_ratio=2.)
_BASE = dict(depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), embed_dim=128, mlp_ratio=2.)
_LARGE = dict(depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), embed_dim=192, mlp_ratio=2.)
_S_TINY = dict(depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), embed_dim=96)
_S_SMALL = dict(depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), embed_dim=96)
_S_BASE = dict(depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), embed_dim=128)
_S_LARGE = dict(depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), embed_dim=192)
_DINAT_S = dict(stem_type='patch', downsample_type='merge', mlp_ratio=4.)
_ISO_SMALL = dict(embed_dim=384, depth=12, num_heads=12)
_ISO_BASE = dict(embed_dim=768, depth=12, num_heads=24)  # head_dim 32, unlike ViT-B's 12 heads

# Dilation of the odd (DiNA) layers per stage: floor(stage map / kernel).
_DIL_224_K7 = (8, 4, 2, 1)  # maps 56/28/14/7
_DIL_384_K7 = (13, 6, 3, 1)  # maps 96/48/24/12
_DIL_384_K11 = (8, 4, 2, 1)


def _dinat(variant: str, pretrained: bool, arch: Dict[str, Any], dilated: Sequence[int], **kwargs) -> NAT:
    """Build a DiNAT variant; unless ``dilations`` is given, it alternates 1 / ``dilated[stage]`` over the layers
    of ``depths`` (so overriding ``depths`` keeps the variant's dilation pattern)."""
    model_args = {**arch, **kwargs}
    if 'dilations' not in kwargs:
        depths = model_args['depths']
        if len(depths) != len(dilated):
            raise ValueError(
                f'depths: {variant} derives its dilations for {len(dilated)} stages, got depths={list(depths)}; '
                f'pass dilations= (one list per stage) as well')
        model_args['dilations'] = alternating_dilations(depths, dilated)
    return _create_nat(variant, pretrained, **model_args)


def _dinat_isotropic(variant: str, pretrained: bool, arch: Dict[str, Any], **kwargs) -> NATIsotropic:
    """Build an isotropic DiNAT variant: dilation 2 on odd blocks unless ``dilations`` is given."""
    model_args = {**arch, **kwargs}
    model_args.setdefault('dilations', tuple(1 if i % 2 == 0 else 2 for i in range(model_args['depth'])))
    return _create_nat_isotropic(variant, pretrained, **model_args)


# ----------------------------------------------------------------------------------------------------------------
# Dense prediction settings (read by attnzoo.models.dense)
# ----------------------------------------------------------------------------------------------------------------
# Per stage, the dilation pattern that repeats over the stage's layers (official detection/configs/dinat*/ and
# segmentation/configs/dinat*/): COCO for Mask / Cascade Mask R-CNN at ~800 px, ADE20K for UPerNet at 512 crops.
_DINAT_DENSE_PATTERNS = {
    ('dinat', 'coco'): ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7), (1, 3, 1, 3, 1)),
    ('dinat_s', 'coco'): ((1, 28), (1, 14), (1, 3, 1, 5, 1, 7), (1, 3)),
    ('dinat', 'ade20k'): ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4), (1, 2, 1, 2, 1)),
    ('dinat_s', 'ade20k'): ((1, 16), (1, 8), (1, 2, 1, 3, 1, 4), (1, 2)),
}
# The official dense backbones' LayerNorm after each returned map: (checkpoint key pattern, eps).
DENSE_OUT_NORM = (r'^norm(\d+)\.(weight|bias)$', 1e-5)


def dinat_dense_dilations(depths: Sequence[int], preset: str, family: str = 'dinat') -> Tuple[Tuple[int, ...], ...]:
    """DiNAT's per-layer dilations for dense prediction: the official per-stage pattern repeated over each stage.

    ``preset``: ``'coco'`` or ``'ade20k'``; ``family``: ``'dinat'`` or ``'dinat_s'``. E.g. DiNAT-T on COCO:
    ``(1,28,1), (1,7,1,14), (1,3,1,5,1,7)x3, (1,3,1,3,1)``.
    """
    key = (family, preset)
    if key not in _DINAT_DENSE_PATTERNS:
        raise ValueError(f'preset={preset!r}, family={family!r}: no DiNAT dense dilations; valid: '
                         f'{sorted(_DINAT_DENSE_PATTERNS)}')
    patterns = _DINAT_DENSE_PATTERNS[key]
    if len(depths) != len(patterns):
        raise ValueError(f'depths={list(depths)}: expected {len(patterns)} stages')
    return tuple(tuple(p[j % len(p)] for j in range(d)) for d, p in zip(depths, patterns))


def _variant_depths(model_name: str) -> Tuple[int, ...]:
    """Blocks per stage of the registered variant ``model_name``, read off the model built on the meta device (no
    memory, no initialisation), so the depths are written once, in the variant's entry point."""
    from timm.models import model_entrypoint

    with torch.device('meta'):
        model = model_entrypoint(model_name.split('.')[0])()
    return tuple(len(stage.blocks) for stage in model.stages)


def dinat_dense_kwargs(model_name: str, preset: str, model_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """DiNAT / DiNAT_s constructor kwargs for the dense ``preset`` (``'coco'``, ``'ade20k'``): the official dense
    ``dilations`` for ``model_kwargs['depths']`` (else the variant's); nothing if ``model_kwargs`` sets
    ``dilations``."""
    if 'dilations' in model_kwargs:
        return {}
    family = 'dinat_s' if model_name.startswith('dinat_s_') else 'dinat'
    depths = model_kwargs.get('depths') or _variant_depths(model_name)
    return dict(dilations=dinat_dense_dilations(depths, preset, family))


@register_model
def nat_mini(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_mini', pretrained, **{**_MINI, **kwargs})


@register_model
def nat_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_tiny', pretrained, **{**_TINY, **kwargs})


@register_model
def nat_small(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_small', pretrained, **{**_SMALL, 'layer_scale_init_value': 1e-5, **kwargs})


@register_model
def nat_base(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_base', pretrained, **{**_BASE, 'layer_scale_init_value': 1e-5, **kwargs})


@register_model
def dinat_mini(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_mini', pretrained, _MINI, _DIL_224_K7, **kwargs)


@register_model
def dinat_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_tiny', pretrained, _TINY, _DIL_224_K7, **kwargs)


@register_model
def dinat_small(pretrained: bool = False, **kwargs) -> NAT:
    """DiNAT-S has no layer scale (unlike NAT-S)."""
    return _dinat('dinat_small', pretrained, _SMALL, _DIL_224_K7, **kwargs)


@register_model
def dinat_base(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_base', pretrained, _BASE, _DIL_224_K7, **{'layer_scale_init_value': 1e-5, **kwargs})


@register_model
def dinat_large(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_large', pretrained, _LARGE, _DIL_224_K7, **kwargs)


@register_model
def dinat_large_384(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_large_384', pretrained, _LARGE, _DIL_384_K7, **kwargs)


@register_model
def dinat_large_384_11x11(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_large_384_11x11', pretrained, _LARGE, _DIL_384_K11, **{'kernel_size': 11, **kwargs})


@register_model
def dinat_large_11x11(pretrained: bool = False, **kwargs) -> NAT:
    """The official ``dinat_large_21k_11x11``: kernel 11 with the 384 px dilations, ImageNet-22K head, 224 px."""
    return _dinat('dinat_large_11x11', pretrained, _LARGE, _DIL_384_K11, **{'kernel_size': 11, **kwargs})


@register_model
def dinat_s_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_s_tiny', pretrained, {**_S_TINY, **_DINAT_S}, _DIL_224_K7, **kwargs)


@register_model
def dinat_s_small(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_s_small', pretrained, {**_S_SMALL, **_DINAT_S}, _DIL_224_K7, **kwargs)


@register_model
def dinat_s_base(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_s_base', pretrained, {**_S_BASE, **_DINAT_S}, _DIL_224_K7, **kwargs)


@register_model
def dinat_s_large(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_s_large', pretrained, {**_S_LARGE, **_DINAT_S}, _DIL_224_K7, **kwargs)


@register_model
def dinat_s_large_384(pretrained: bool = False, **kwargs) -> NAT:
    return _dinat('dinat_s_large_384', pretrained, {**_S_LARGE, **_DINAT_S}, _DIL_384_K7, **kwargs)


@register_model
def nat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('nat_isotropic_small', pretrained, **{**_ISO_SMALL, **kwargs})


@register_model
def nat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('nat_isotropic_base', pretrained, **{**_ISO_BASE, **kwargs})


@register_model
def dinat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _dinat_isotropic('dinat_isotropic_small', pretrained, _ISO_SMALL, **kwargs)


@register_model
def dinat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _dinat_isotropic('dinat_isotropic_base', pretrained, _ISO_BASE, **kwargs)
