"""Sparsifiner: learned instance-dependent top-k sparse attention on DeiT, registered in timm.

Paper: Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers,
Wei et al., CVPR 2023 - https://arxiv.org/abs/2303.13755
Official code (MIT): https://github.com/lim142857/Sparsifiner (no Sparsifiner weights are released).

The model is timm's ``VisionTransformer`` (DeiT) whose attention layers own a low-rank connectivity
predictor (``attn.mask_predictor``, the official key names): per head, queries and keys are reduced
to ``head_dim // reduce_c_factor`` channels, keys to ``num_tokens // reduce_n_factor`` tokens
(Linformer), the cheap attention (scale ``num_heads ** -0.5``, an official quirk) of every non-class
query is a coefficient vector over a learned basis ``proj_back_n``; at inference the coefficients
keep their top ``basis_topk`` and the basis entries below ``basis_threshold`` (in absolute value)
are zeroed; each query then keeps its top ``ceil(keep_rate * num_tokens)`` keys
(``attnzoo.ops.topk_connectivity``: among equal scores the lower index wins; on CUDA one fused Triton
kernel that never writes the ``N x N`` reconstruction). The class-token row stays dense. Attention over
the kept keys: on the CPU ``attnzoo.ops.topk_attention`` over the kept indices (its ``torch`` path's cost
falls with the keep rate), on CUDA ``attnzoo.ops.connectivity_attention`` over the kept bitmask (by
default, ``auto``, the block-skipping Triton kernels, measured faster than the fused masked SDPA call of
backend ``torch`` on the H200; see ``attnzoo/ops/connectivity.py``); the official code fills ``-inf`` into
dense attention. ``Sparsifiner.set_backends`` picks the predictor / attention backends of every layer
(benchmarks compare them).

Training modes (set by ``set_recon_mode``; see ``attnzoo.tasks.sparsifiner``):
* phase 1 (``recon=True``, in training mode): the backbone runs dense attention and every attention
  layer keeps ``approx_attn`` (``[B, heads, N-1, N]``, raw signed basis, dense coefficients) for the
  distillation loss against the dense teacher's attention; the predictors' parameters are trainable;
* phase 2 / plain fine-tuning / inference (the default): sparse attention with the predictor's top-k
  connectivity (detached), the predictors' parameters frozen (``requires_grad=False``), so an optimizer over
  the trainable parameters does not carry them. timm's generic backward tests (every parameter gets a
  gradient) therefore do not hold outside phase 1, by design; ``prune_intermediate_layers`` keeps the
  predictors of the kept blocks, in the same state.

Like timm's ViT / DeiT, ``forward_features`` returns tokens ``[B, 1+N, C]`` (``pool_size`` None): timm's test
suite checks such models with ``test_model_default_cfgs_non_std`` (its ``NON_STD_FILTERS`` list ``vit_*`` and
``deit_*``), not the NCHW ``test_model_default_cfgs``; tests/models/test_sparsifiner_timm.py runs those checks.

With ``keep_rate=1.0`` the predictor is skipped and attention is dense SDPA (the official top-k of
all 197 keys gives the same all-ones mask). ``record_attn=True`` (``set_record_attn``) makes dense
layers keep their softmax attention maps (the teacher's role).

Only 224 px (197 tokens) works with the released recipe: ``proj_n`` / ``proj_back_n`` are sized by
the token count.

``SparsifinerLVViT`` (``sparsifiner_lvvit_small``) is the official ``SparsifinerLVViT`` of
``sparsifiner_lvvit.py`` as ``main.py`` builds it: LV-ViT-S (Token Labeling, Jiang et al. 2021) with a
4-conv patch stem (7x7/2, 3x3, 3x3 with BatchNorm + ReLU, 64 channels, then an 8x8/8 projection), 16
blocks of width 384 / 6 heads / MLP ratio 3, no qkv bias, LayerNorm eps 1e-5, residual branches divided
by ``skip_lam=2``, and the token-labeling ``aux_head`` on the patch tokens; in eval mode the logits are
``head(cls) + 0.5 * max_tokens(aux_head(patches))``, in training mode ``head(cls)`` (official).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_checkpoint_filter_fn

from attnzoo.ops.connectivity import connectivity_attention, topk_connectivity
from attnzoo.ops.sparse import keep_budget, topk_attention
from attnzoo.ops._dispatch import add_attention_macs, check_backend_name, get_backend, use_backend

from ._base import check_drop_rates, pop_out_indices, unmapped_keys_error, unwrap_state_dict
from ._pretrained import resolve_pretrained

__all__ = ['Sparsifiner', 'SparsifinerLVViT', 'MaskPredictor', 'SparsifinerAttention', 'LVViTPatchEmbed',
           'LVViTBlock', 'checkpoint_filter_fn', 'predictor_macs']


def check_fixed_image_size(x: torch.Tensor, img_size: Tuple[int, int], num_tokens: int) -> None:
    """Raise a named error unless ``x`` is ``[B, C, *img_size]`` (the predictor is sized for ``num_tokens``)."""
    if x.ndim != 4 or tuple(x.shape[-2:]) != img_size:
        raise ValueError(f'x: expected [B, C, {img_size[0]}, {img_size[1]}] '
                         f'(the predictor is sized for {num_tokens} tokens), got {list(x.shape)}')


# FX: keep the shape check out of traced graphs; torch.fx.wrap patches it in every trace (timm's notrace list only
# reaches functions in the traced root's own module, and the root forward here is timm's VisionTransformer.forward).
torch.fx.wrap('check_fixed_image_size')


class MaskPredictor(nn.Module):
    """Low-rank connectivity predictor of one attention layer (official ``MaskPredictor``).

    Inputs ``q, k``: ``[B, heads, N, head_dim]``; ``forward`` returns the kept keys of every non-class query
    (``attnzoo.ops.topk_connectivity``, detached): int32 ``[B, heads, N-1, budget]`` ascending key
    positions (``layout='indices'``) or an int32 ``[B, heads, N-1, ceil(N / 32)]`` bitmask (``'bitmask'``).
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, keep_rate: float = 0.25,
                 reduce_n_factor: int = 6, reduce_c_factor: int = 2, share_inout_proj: bool = False,
                 basis_threshold: float = 2e-2, basis_topk: int = 8, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.num_tokens = num_tokens
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.reduced_c = self.head_dim // reduce_c_factor
        self.reduced_n = num_tokens // reduce_n_factor
        if self.reduced_c < 1 or self.reduced_n < 1:
            raise ValueError(f'reduce_c_factor={reduce_c_factor} / reduce_n_factor={reduce_n_factor} leave no '
                             f'channels ({self.reduced_c}) or tokens ({self.reduced_n})')
        if not 1 <= basis_topk <= self.reduced_n:
            raise ValueError(f'basis_topk must be in [1, {self.reduced_n}], got {basis_topk}')
        self.scale = num_heads ** -0.5  # official quirk: num_heads, not head_dim
        self.basis_threshold = basis_threshold
        self.basis_topk = basis_topk
        self.proj_c_q = nn.Linear(self.head_dim, self.reduced_c, **dd)
        self.proj_c_k = nn.Linear(self.head_dim, self.reduced_c, **dd)
        self.proj_n = nn.Parameter(torch.empty(num_tokens, self.reduced_n, **dd))
        self.share_inout_proj = share_inout_proj
        if share_inout_proj:
            self.proj_back_n = self.proj_n
        else:
            self.proj_back_n = nn.Parameter(torch.empty(num_tokens, self.reduced_n, **dd))
        self.set_keep_rate(keep_rate)
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_(self.proj_n, std=.02)
        if not self.share_inout_proj:
            trunc_normal_(self.proj_back_n, std=.02)
        for m in (self.proj_c_q, self.proj_c_k):
            trunc_normal_(m.weight, std=.02)
            nn.init.zeros_(m.bias)

    def set_keep_rate(self, keep_rate: float) -> None:
        self.keep_rate = float(keep_rate)
        self.budget = keep_budget(keep_rate, self.num_tokens)

    def basis_coef(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Softmax of the cheap low-rank attention of the non-class queries: ``[B, heads, N-1, reduced_n]``."""
        q, k = self.proj_c_q(q), self.proj_c_k(k)
        k_down = k.transpose(-1, -2) @ self.proj_n  # [B, H, c, r]
        cheap = (q[:, :, 1:] @ k_down) * self.scale
        return cheap.softmax(dim=-1)

    def approx_attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Phase-1 reconstructed attention ``[B, heads, N-1, N]`` (differentiable): the raw signed basis and the
        dense coefficients, the official training-mode reconstruction regressed onto the teacher's attention."""
        return self.basis_coef(q, k) @ self.proj_back_n.t()

    def sparse_basis(self) -> torch.Tensor:
        """The inference basis ``[reduced_n, N]``: ``|proj_back_n^T|``, entries at or below the threshold zeroed."""
        basis = self.proj_back_n.t().abs()
        return torch.where(basis > self.basis_threshold, basis, torch.zeros_like(basis))

    @torch.no_grad()
    def forward(self, q: torch.Tensor, k: torch.Tensor, layout: str = 'indices') -> torch.Tensor:
        if q.shape[2] != self.num_tokens:
            raise ValueError(f'MaskPredictor: expected {self.num_tokens} tokens (it is sized by the token count '
                             f'of its image size), got {q.shape[2]}')
        return topk_connectivity(self.proj_c_q(q[:, :, 1:]), self.proj_c_k(k), self.proj_n, self.sparse_basis(),
                                 self.scale, self.basis_topk, self.budget, layout)

    def extra_repr(self) -> str:
        return (f'tokens={self.num_tokens}, reduced_n={self.reduced_n}, reduced_c={self.reduced_c}, '
                f'budget={self.budget}, basis_topk={self.basis_topk}, basis_threshold={self.basis_threshold}')


@register_notrace_module  # FX: a leaf (phase-dependent paths, recorded attention maps)
class SparsifinerAttention(nn.Module):
    """Multi-head self-attention with a ``MaskPredictor``; the key names of timm's ``Attention``
    (``qkv``, ``proj``) plus ``mask_predictor``. ``[B, N, C]`` -> ``[B, N, C]``."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
                 scale_norm: bool = False, proj_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.,
                 norm_layer=None, depth: int = 0, num_tokens: int = 197, keep_rate: float = 0.25,
                 reduce_n_factor: int = 6, reduce_c_factor: int = 2, share_inout_proj: bool = False,
                 basis_threshold: float = 2e-2, basis_topk: int = 8, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        if qk_norm or scale_norm:
            raise ValueError('SparsifinerAttention: qk_norm / scale_norm are not supported (DeiT has neither)')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.mask_predictor = MaskPredictor(
            dim, num_heads, num_tokens, keep_rate, reduce_n_factor, reduce_c_factor, share_inout_proj,
            basis_threshold, basis_topk, **dd)
        self.recon = False  # phase-1 training: dense attention, keep approx_attn
        self.record_attn = False  # keep the dense softmax maps (teacher)
        self.approx_attn: Optional[torch.Tensor] = None
        self.attn_map: Optional[torch.Tensor] = None
        self.backends = {'predictor': 'auto', 'attention': 'auto'}  # per-layer overrides of ``auto``

    def _dropout_p(self) -> float:
        return self.attn_drop.p if self.training else 0.

    def _backend(self, part: str):
        """``use_backend(self.backends[part])`` when that is set and no ``use_backend`` block is active."""
        override = self.backends[part]
        if override == 'auto' or get_backend() != 'auto':
            return contextlib.nullcontext()
        return use_backend(override)

    def _dense(self, q, k, v):
        B, H, N, D = q.shape
        add_attention_macs(B * H * N * N * (D + v.shape[-1]))
        if self.record_attn:
            attn = ((q @ k.transpose(-1, -2)) * self.scale).softmax(-1)
            self.attn_map = attn
            return self.attn_drop(attn) @ v
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p(), scale=self.scale)

    def _sparse(self, q, k, v):
        """Attention over the predictor's kept keys, the class-token row dense: on the CPU the
        ``topk_attention`` gather over the kept indices, on CUDA ``connectivity_attention`` over the kept bitmask."""
        predictor = self.mask_predictor
        if not q.is_cuda:
            with self._backend('predictor'):
                indices = predictor(q, k)
            return topk_attention(q, k, v, indices=indices, dense_rows=1, scale=self.scale,
                                  dropout_p=self._dropout_p(), check_indices=False)
        with self._backend('predictor'):
            bitmask = predictor(q, k, layout='bitmask')
        with self._backend('attention'):
            return connectivity_attention(q, k, v, bitmask, predictor.budget, dense_rows=1, scale=self.scale,
                                          dropout_p=self._dropout_p())

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False,
                **kwargs) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError('SparsifinerAttention: attn_mask / is_causal are not supported')
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        predictor = self.mask_predictor
        if self.recon and self.training:  # phase 1: the loss needs the dense reconstruction
            self.approx_attn = predictor.approx_attention(q, k)
            x = self._dense(q, k, v)
        elif predictor.budget >= N or self.record_attn:
            x = self._dense(q, k, v)
        else:
            x = self._sparse(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


# The drop probabilities of timm's ``VisionTransformer`` constructor.
_VIT_DROP_RATES = ('drop_rate', 'pos_drop_rate', 'patch_drop_rate', 'proj_drop_rate', 'attn_drop_rate', 'drop_path_rate')


class Sparsifiner(VisionTransformer):
    """DeiT (timm ``VisionTransformer``, class token, learned position embedding) with Sparsifiner
    attention. Everything timm's ViT offers is inherited: ``forward_features`` (``[B, 1+N, C]`` tokens),
    ``forward_head``, ``forward_intermediates`` over blocks, ``features_only`` (getter),
    ``reset_classifier``, ``group_matcher``, ``no_weight_decay``, ``set_grad_checkpointing``."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, keep_rate: Union[float, Sequence[float]] = 0.25,
                 reduce_n_factor: int = 6, reduce_c_factor: int = 2, share_inout_proj: bool = False,
                 basis_threshold: float = 2e-2, basis_topk: int = 8, **kwargs):
        """
        Args:
            img_size, patch_size: as timm's ViT; the predictor is sized for ``(img/patch)^2 + 1`` tokens.
            keep_rate: fraction of keys each query keeps (``ceil(rate * tokens)``), one value or one per block.
            reduce_n_factor: Linformer token reduction of the predictor (released config: 6 -> 32 of 197).
            reduce_c_factor: channel reduction of the predictor (2: head_dim 64 -> 32).
            share_inout_proj: tie ``proj_back_n`` to ``proj_n``.
            basis_threshold: |basis| entries at or below it are zeroed at inference (2e-2).
            basis_topk: coefficients kept per query at inference (8).
            **kwargs: timm ``VisionTransformer`` arguments (embed_dim, depth, num_heads, ...).
        """
        check_drop_rates(**{k: v for k, v in kwargs.items() if k in _VIT_DROP_RATES})
        for bad in ('dynamic_img_size', 'reg_tokens', 'no_embed_class'):
            if kwargs.get(bad):
                raise ValueError(f'Sparsifiner: {bad} is not supported (the predictor is sized by a fixed token count)')
        if not kwargs.get('class_token', True) or kwargs.get('global_pool', 'token') != 'token':
            raise ValueError("Sparsifiner: needs the class token and global_pool='token' (its row stays dense)")
        grid = [s // patch_size for s in ((img_size, img_size) if isinstance(img_size, int) else img_size)]
        num_tokens = grid[0] * grid[1] + 1
        depth = kwargs.get('depth', 12)
        rates = [keep_rate] * depth if isinstance(keep_rate, (int, float)) else list(keep_rate)
        if len(rates) != depth:
            raise ValueError(f'keep_rate: expected one value or {depth} (one per block), got {len(rates)}')
        for r in rates:
            keep_budget(r, num_tokens)  # validates
        predictor_args = dict(num_tokens=num_tokens, keep_rate=rates[0], reduce_n_factor=reduce_n_factor,
                              reduce_c_factor=reduce_c_factor, share_inout_proj=share_inout_proj,
                              basis_threshold=basis_threshold, basis_topk=basis_topk)

        class attn_layer(SparsifinerAttention):  # timm's Block wants a class, not a partial
            def __init__(self, *args, **kw):
                super().__init__(*args, **{**predictor_args, **kw})

        super().__init__(img_size=img_size, patch_size=patch_size, attn_layer=attn_layer, **kwargs)
        self.num_tokens = num_tokens
        self.set_keep_rate(rates)
        self.set_recon_mode(False)  # the predictor is frozen until phase 1 asks for it

    def set_keep_rate(self, keep_rate: Union[float, Sequence[float]]) -> None:
        """Change the keep rate of every block (one value) or of each block (a list); no parameter changes."""
        rates = [keep_rate] * len(self.blocks) if isinstance(keep_rate, (int, float)) else list(keep_rate)
        if len(rates) != len(self.blocks):
            raise ValueError(f'keep_rate: expected one value or {len(self.blocks)}, got {len(rates)}')
        for blk, r in zip(self.blocks, rates):
            blk.attn.mask_predictor.set_keep_rate(r)
        self.keep_rate = rates[0] if len(set(rates)) == 1 else rates

    def set_backends(self, predictor: str = 'auto', attention: str = 'auto') -> None:
        """Backends of every layer's predictor (``topk_connectivity``: ``torch`` unfused, ``triton`` fused) and
        sparse attention (``connectivity_attention``: ``torch`` masked SDPA, ``triton`` the block-skipping
        kernels), used where no ``use_backend`` block is active; ``'auto'`` (the default) follows the ops' own
        measured choice, on CUDA ``triton`` for both where the kernels apply."""
        choice = {'predictor': check_backend_name(predictor), 'attention': check_backend_name(attention)}
        for blk in self.blocks:
            blk.attn.backends = dict(choice)

    def set_recon_mode(self, enable: bool = True) -> None:
        """Phase 1 (``enable=True``): in training mode, dense attention and ``approx_attn`` kept in every attention
        layer, and the predictors' parameters trainable. Otherwise (the default from construction on: phase 2,
        plain fine-tuning, inference) the predictors are frozen (``requires_grad=False``): their top-k
        connectivity is detached, so no loss reaches them, and an optimizer built from the trainable parameters
        (timm's ``create_optimizer_v2``, mmengine's constructors) leaves them out instead of carrying them dead."""
        for blk in self.blocks:
            blk.attn.recon = enable
            blk.attn.approx_attn = None
            blk.attn.mask_predictor.requires_grad_(enable)

    def set_record_attn(self, enable: bool = True) -> None:
        """Dense attention with the softmax maps kept in ``blocks[i].attn.attn_map`` (teacher role)."""
        for blk in self.blocks:
            blk.attn.record_attn = enable
            blk.attn.attn_map = None

    def approx_attn_maps(self) -> List[torch.Tensor]:
        return [blk.attn.approx_attn for blk in self.blocks]

    def attn_maps(self) -> List[torch.Tensor]:
        return [blk.attn.attn_map for blk in self.blocks]

    def forward_features(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        check_fixed_image_size(x, tuple(self.patch_embed.img_size), self.num_tokens)
        return super().forward_features(x, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# LV-ViT backbone (official sparsifiner_lvvit.py: PatchEmbed4_2, Block with skip_lam, head + aux_head)
# ---------------------------------------------------------------------------------------------------------------

class LVViTPatchEmbed(nn.Module):
    """LV-ViT's convolutional patch stem (official ``PatchEmbed4_2``): conv 7x7/2 (no bias), BN, ReLU, two
    conv 3x3 (no bias), BN, ReLU, then a ``patch_size // 2`` strided projection with bias.
    ``[B, C, H, W]`` -> ``[B, (H/p)*(W/p), embed_dim]``. Key names are the official ones."""

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 384, stem_chs: int = 64, bias: bool = True, dynamic_img_pad: bool = False,
                 device=None, dtype=None, **kwargs):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if kwargs or dynamic_img_pad:
            raise ValueError(f'LVViTPatchEmbed: unsupported arguments {sorted(kwargs) or ["dynamic_img_pad"]}')
        patch = to_2tuple(patch_size)
        if patch[0] != patch[1] or patch[0] % 2:
            raise ValueError(f'LVViTPatchEmbed: patch_size must be one even number, got {patch_size}')
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch
        if self.img_size[0] % patch[0] or self.img_size[1] % patch[1]:
            raise ValueError(f'img_size {self.img_size} must be divisible by patch_size {patch[0]}')
        self.grid_size = (self.img_size[0] // patch[0], self.img_size[1] // patch[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=7, stride=2, padding=3, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(stem_chs, **dd)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(stem_chs, stem_chs, kernel_size=3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(stem_chs, **dd)
        self.conv3 = nn.Conv2d(stem_chs, stem_chs, kernel_size=3, stride=1, padding=1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(stem_chs, **dd)
        self.proj = nn.Conv2d(stem_chs, embed_dim, kernel_size=patch[0] // 2, stride=patch[0] // 2, bias=bias, **dd)

    def feat_ratio(self, as_scalar: bool = True) -> Union[Tuple[int, int], int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.proj(x).flatten(2).transpose(1, 2)


class LVViTBlock(Block):
    """timm's pre-norm ``Block`` with LV-ViT's residual scaling (official ``Block``):
    ``x + attn(norm1(x)) / skip_lam``, then ``x + mlp(norm2(x)) / skip_lam``."""

    def __init__(self, *args, skip_lam: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_lam = skip_lam

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        attn = self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)
        x = x + self.drop_path1(self.ls1(attn)) / self.skip_lam
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) / self.skip_lam
        return x


class SparsifinerLVViT(Sparsifiner):
    """Sparsifiner on LV-ViT (official ``SparsifinerLVViT`` with ``p_emb='4_2'``, ``return_dense=True``).

    The token-labeling ``aux_head`` classifies every patch token; ``forward_head`` returns ``head(cls)`` in
    training mode and ``head(cls) + aux_weight * max over tokens of aux_head(patches)`` in eval mode, as the
    official ``forward``; ``aux_logits(tokens)`` gives the per-token logits ``[B, N-1, classes]`` (the
    official ``features``, used by token-labeling / token-distillation losses). ``mix_token`` of the official
    constructor only sets a flag there (its forward has no MixToken), so it has no counterpart here.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, skip_lam: float = 2.0, stem_chs: int = 64,
                 aux_weight: float = 0.5, **kwargs):
        """
        Args:
            skip_lam: residual branches are divided by it (official LV-ViT-S: 2.0).
            stem_chs: channels of the conv stem (64: ``p_emb='4_2'``; 128: ``'4_2_128'``).
            aux_weight: weight of the max-pooled token logits in eval-mode outputs (official 0.5).
            Other arguments: as ``Sparsifiner`` (LV-ViT defaults: ``qkv_bias=False``, LayerNorm eps 1e-5).
        """
        for bad in ('embed_layer', 'block_fn', 'global_pool', 'fc_norm', 'pre_norm'):
            if bad in kwargs:
                raise ValueError(f'SparsifinerLVViT: {bad} is fixed by the LV-ViT architecture')
        kwargs.setdefault('qkv_bias', False)
        kwargs.setdefault('norm_layer', partial(nn.LayerNorm, eps=1e-5))
        super().__init__(img_size=img_size, patch_size=patch_size,
                         embed_layer=partial(LVViTPatchEmbed, stem_chs=stem_chs),
                         block_fn=partial(LVViTBlock, skip_lam=skip_lam), **kwargs)
        self.skip_lam = skip_lam
        self.aux_weight = aux_weight
        self.aux_head = self._new_aux_head(self.num_classes)

    def _new_aux_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(self.embed_dim, num_classes, device=self.head.weight.device, dtype=self.head.weight.dtype)
        trunc_normal_(head.weight, std=.02)
        nn.init.zeros_(head.bias)
        return head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        self.aux_head = self._new_aux_head(num_classes)
        self.aux_head.train(self.training)

    def aux_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Token-labeling logits of the patch tokens of ``forward_features`` output: ``[B, N-1, classes]``."""
        return self.aux_head(x[:, self.num_prefix_tokens:])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = super().forward_head(x, pre_logits=pre_logits)
        if pre_logits or self.training or isinstance(self.aux_head, nn.Identity):
            return out
        return out + self.aux_weight * self.aux_logits(x).amax(dim=1)


def predictor_macs(model: Sparsifiner, batch: int = 1) -> int:
    """Matmul MACs of the predictors (both channel reductions, the key token reduction, the cheap
    attention and the sparse reconstruction with ``basis_topk`` coefficients per query), as the paper's
    "MHSA" column includes them. fvcore counts them too, with the reconstruction dense."""
    total = 0
    for blk in model.blocks:
        p = blk.attn.mask_predictor
        if p.budget >= p.num_tokens:
            continue
        H, N, d, c, r = p.num_heads, p.num_tokens, p.head_dim, p.reduced_c, p.reduced_n
        total += batch * H * (2 * N * d * c + c * N * r + (N - 1) * c * r + (N - 1) * p.basis_topk * N)
    return total


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------

def _unwrap(state_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    state_dict = unwrap_state_dict(state_dict, ('model', 'state_dict', 'model_ema', 'state_dict_ema'))
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: Sparsifiner) -> Dict[str, torch.Tensor]:
    """Official Sparsifiner checkpoints (same key names) and plain timm / DeiT ViT checkpoints -> this model.

    Accepts ``model`` / ``state_dict`` / ``model_ema`` wrappers and a ``module.`` prefix. Position embeddings
    and patch-embedding weights are adapted by timm's ViT filter. A checkpoint without predictor keys
    (DeiT) gets the model's own freshly initialised predictor tensors, so strict loading succeeds and
    phase 1 can start from public DeiT weights.

    Raises:
        ValueError: listing keys that do not map onto the model (distilled DeiT ``dist_token`` / ``head_dist``,
            LV-ViT checkpoints, ...).
    """
    state_dict = _unwrap(state_dict)
    predictor = {k: v for k, v in state_dict.items() if '.mask_predictor.' in k}
    backbone = {k: v for k, v in state_dict.items() if '.mask_predictor.' not in k}
    lvvit = isinstance(model, SparsifinerLVViT)
    # LV-ViT: official key names throughout (no timm remapping / resampling: the token count is fixed)
    out = dict(backbone) if lvvit else _vit_checkpoint_filter_fn(backbone, model)
    model_state = model.state_dict()
    if predictor:
        out.update(predictor)
    else:
        out.update({k: v.detach().clone() for k, v in model_state.items() if '.mask_predictor.' in k})
    if getattr(model.blocks[0].attn.mask_predictor, 'share_inout_proj', False):
        for k in [k for k in out if k.endswith('.proj_back_n')]:
            out.setdefault(k.replace('.proj_back_n', '.proj_n'), out[k])
    heads = ('head.', 'aux_head.') if lvvit else ('head.',)
    unmapped = [k for k in out if k not in model_state and not k.startswith(heads)]
    if lvvit:  # a DeiT checkpoint has the same names for different shapes (patch_embed.proj, mlp.fc1, ...)
        unmapped += [f'{k} {list(v.shape)} (model: {list(model_state[k].shape)})' for k, v in out.items()
                     if k in model_state and not k.startswith(heads) and v.shape != model_state[k].shape]
    if unmapped:
        hint = 'a DeiT / ViT checkpoint?' if lvvit else 'a distilled DeiT or an LV-ViT checkpoint?'
        raise unmapped_keys_error(unmapped, type(model).__name__, hint, max_listed=20)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Builders, pretrained configs, registered variants
# ---------------------------------------------------------------------------------------------------------------

def _create_sparsifiner(variant: str, pretrained: bool = False, model_cls: type = Sparsifiner,
                        **kwargs) -> Sparsifiner:
    """Build a variant (``kwargs`` hold its ``depth``). ``features_only=True``: timm's getter over the blocks, by
    default the last 3; ``out_indices`` is checked by ``check_out_indices``."""
    out_indices = pop_out_indices(kwargs, kwargs['depth'], 3)
    resolve_pretrained(variant, pretrained, kwargs)  # the file through attnzoo's checkpoint loader
    return build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs)


_ORIGIN = 'https://github.com/lim142857/Sparsifiner'
_DEIT_URL = 'https://dl.fbaipublicfiles.com/deit/'


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': .875, 'interpolation': 'bicubic', 'fixed_input_size': True,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'mit', 'origin_url': _ORIGIN, 'paper_ids': 'arXiv:2303.13755',
        'paper_name': 'Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers',
        **kwargs,
    }


_INIT_NOTE = ('No Sparsifiner weights are released. This tag loads the public DeiT weights into the backbone with '
              'a freshly initialised predictor: the starting point of phase 1 (predictor distillation), not a '
              'usable sparse model.')

_LVVIT_URL = 'https://github.com/zihangJiang/TokenLabeling/releases/download/1.0/'
_LVVIT_NOTE = ('No Sparsifiner weights are released. This tag loads the public LV-ViT-S weights (Token Labeling '
               'release, the ones the official run_model.sh downloads) into the backbone with a freshly '
               'initialised predictor: the starting point of phase 1, not a usable sparse model.')

default_cfgs = generate_default_cfgs({
    'sparsifiner_deit_tiny.deit_init': _cfg(_DEIT_URL + 'deit_tiny_patch16_224-a1311bcf.pth', notes=_INIT_NOTE),
    'sparsifiner_deit_small.deit_init': _cfg(_DEIT_URL + 'deit_small_patch16_224-cd65a155.pth', notes=_INIT_NOTE),
    'sparsifiner_deit_base.deit_init': _cfg(_DEIT_URL + 'deit_base_patch16_224-b5f2ef4d.pth', notes=_INIT_NOTE),
    'sparsifiner_lvvit_small.lvvit_init': _cfg(
        _LVVIT_URL + 'lvvit_s-26M-224-83.3.pth.tar', crop_pct=0.9, first_conv='patch_embed.conv1',
        classifier=('head', 'aux_head'), license='apache-2.0', notes=_LVVIT_NOTE),
})

# DeiT architectures (official main.py builds DeiT-S; Ti/B are the same class at the DeiT widths, head_dim 64).
_DEIT_TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
_DEIT_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
_DEIT_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
# LV-ViT-S as the official main.py builds it ('sparsifiner_lvvit'): p_emb '4_2', skip_lam 2, qkv_bias False.
_LVVIT_SMALL = dict(patch_size=16, embed_dim=384, depth=16, num_heads=6, mlp_ratio=3., skip_lam=2.0)


@register_model
def sparsifiner_deit_tiny(pretrained: bool = False, **kwargs) -> Sparsifiner:
    return _create_sparsifiner('sparsifiner_deit_tiny', pretrained, **{**_DEIT_TINY, **kwargs})


@register_model
def sparsifiner_deit_small(pretrained: bool = False, **kwargs) -> Sparsifiner:
    return _create_sparsifiner('sparsifiner_deit_small', pretrained, **{**_DEIT_SMALL, **kwargs})


@register_model
def sparsifiner_deit_base(pretrained: bool = False, **kwargs) -> Sparsifiner:
    return _create_sparsifiner('sparsifiner_deit_base', pretrained, **{**_DEIT_BASE, **kwargs})


@register_model
def sparsifiner_lvvit_small(pretrained: bool = False, **kwargs) -> SparsifinerLVViT:
    return _create_sparsifiner('sparsifiner_lvvit_small', pretrained, model_cls=SparsifinerLVViT,
                               **{**_LVVIT_SMALL, **kwargs})
