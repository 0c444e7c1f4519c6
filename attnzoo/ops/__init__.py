"""Attention ops shared by every attnzoo model.

One public function per attention kind (tensor layouts in each docstring); backends sit behind
``attnzoo.ops._dispatch`` and are chosen per call (``use_backend`` forces one).
"""
from ._dispatch import BACKENDS, count_attention_macs, get_backend, use_backend
from .neighborhood import NeighborhoodAttention2D, flex_available, na1d, na2d, na3d, natten_available
from .routing import region_routing, routing_attention  # BiFormer's bi-level routing attention

__all__ = [
    'BACKENDS', 'use_backend', 'get_backend', 'count_attention_macs',
    'na1d', 'na2d', 'na3d', 'NeighborhoodAttention2D', 'natten_available', 'flex_available',
]
__all__ += ['routing_attention', 'region_routing']
