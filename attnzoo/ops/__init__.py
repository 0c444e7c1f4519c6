"""Attention ops shared by every attnzoo model.

One public function per attention kind (tensor layouts in each docstring); backends sit behind
``attnzoo.ops._dispatch`` and are chosen per call (``use_backend`` forces one).
"""
from ._dispatch import BACKENDS, count_attention_macs, get_backend, use_backend
from .dynamic_conv import dynamic_dwconv2d  # DLGSANet's dynamic local attention
from .factorized import FactorizedSelfAttention, factorize_windows, factorized_attention  # FaViT's FaSA
from .linear import LinearAttention, linear_attention  # L²ViT's linear attention
from .neighborhood import (  # NAT / DiNAT
    NeighborhoodAttention2D, flex_available, na1d, na2d, na3d, natten_available, natten_fused_available,
    triton_available)
from .routing import region_routing, routing_attention  # BiFormer's bi-level routing attention
from .sparse import topk_attention  # Sparsifiner's top-k sparse attention
from .connectivity import connectivity_attention, topk_connectivity  # Sparsifiner's predictor and its attention
from .window import (  # non-overlapping (shifted) window attention and its partition helpers
    WindowAttention2D, pad_to_window, shifted_window_mask, window_attention, window_partition, window_reverse)

__all__ = [
    'BACKENDS', 'use_backend', 'get_backend', 'count_attention_macs',
    'na1d', 'na2d', 'na3d', 'NeighborhoodAttention2D', 'natten_available', 'natten_fused_available',
    'flex_available', 'triton_available',
    'routing_attention', 'region_routing',
    'window_attention', 'window_partition', 'window_reverse', 'pad_to_window', 'shifted_window_mask',
    'WindowAttention2D',
    'linear_attention', 'LinearAttention',
    'factorize_windows', 'factorized_attention', 'FactorizedSelfAttention',
    'topk_attention', 'topk_connectivity', 'connectivity_attention',
    'dynamic_dwconv2d',
]
