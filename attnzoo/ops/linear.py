"""L²ViT's enhanced linear attention: ReLU kernel, clamped denominator, numerator-only temperature.

For one head with queries/keys/values ``q, k, v`` (``N x d``) and ``phi = ReLU``::

    out_i = t * sum_j (phi(q_i) . phi(k_j)) v_j  /  max(phi(q_i) . sum_j phi(k_j), clamp_min)

* ``t`` is a (learnable, per-head) temperature that scales the numerator only; L²ViT initialises it to
  ``d ** -0.5``.
* The denominator is clamped from below at ``clamp_min`` (100 in L²ViT), not regularised with an epsilon:
  where ``phi(q_i) . sum_j phi(k_j) < clamp_min`` the weights sum to less than ``t`` (no normalised average).
* No feature scaling, no elu+1, no attention dropout (the official kv-first path has none).

Backends: ``torch`` computes ``phi(k)^T v`` first (``O(N d^2)`` per head, the official order); ``reference``
forms the ``N x N`` attention matrix (the official, commented-out "qk-first" form, which is the same function).
Both are plain matmuls, which FLOP counters such as fvcore count themselves, so this op reports nothing to
``count_attention_macs`` (reporting it too would count it twice); its MACs are ``B*heads*N*d*(2*d_v + 1)``.

Tensor layout: ``[B, heads, N, head_dim]`` (SDPA's layout).
"""
from typing import Union

import torch
from timm.layers import register_notrace_module
from torch import nn

from ._checks import check_heads, check_qkv, check_real, select_simple_backend

__all__ = ['linear_attention', 'LinearAttention']


def _check(q, k, v, temperature, clamp_min, op: str) -> None:
    check_qkv(op, q, k, v, ('B', 'heads', 'N', 'head_dim'))
    if not isinstance(temperature, torch.Tensor):
        check_real(op, 'temperature', temperature)
    else:
        try:
            torch.broadcast_shapes(temperature.shape, q.shape[:2] + (1, 1))
        except RuntimeError:
            raise ValueError(f'{op}: temperature must broadcast to [B, heads, 1, 1] = {tuple(q.shape[:2]) + (1, 1)}, '
                             f'e.g. [heads, 1, 1]; got shape {tuple(temperature.shape)}') from None
    check_real(op, 'clamp_min', clamp_min)
    if not clamp_min > 0:
        raise ValueError(f'{op}: clamp_min must be > 0, got {clamp_min}')


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     temperature: Union[float, torch.Tensor] = 1.0, clamp_min: float = 100.0) -> torch.Tensor:
    """L²ViT linear attention (ReLU feature map, clamped denominator, numerator-only temperature).

    Args:
        q, k: ``[B, heads, N, head_dim]`` (before the ReLU feature map, which this op applies);
            v: ``[B, heads, N, head_dim_v]``.
        temperature: Float, or tensor broadcasting to ``[B, heads, 1, 1]`` (L²ViT: learnable ``[heads, 1, 1]``);
            multiplies the numerator only.
        clamp_min: Lower bound of the denominator ``relu(q_i) . sum_j relu(k_j)`` (L²ViT: 100).

    Returns:
        ``[B, heads, N, head_dim_v]``.
    """
    op = 'linear_attention'
    _check(q, k, v, temperature, clamp_min, op)
    backend = select_simple_backend(op)
    q, k = torch.relu(q), torch.relu(k)
    if backend == 'reference':
        attn = q @ k.transpose(-2, -1)  # [B, h, N, N]
        denom = attn.sum(-1, keepdim=True).clamp(min=clamp_min)
        return (attn @ v) * temperature / denom
    denom = (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)).clamp(min=clamp_min)  # [B, h, N, 1]
    kv = (k.transpose(-2, -1) @ v) * temperature  # [B, h, d, d_v]
    return (q @ kv) / denom


@register_notrace_module
class LinearAttention(nn.Module):
    """L²ViT's multi-head linear global attention with the official parameter names.

    ``qkv`` (Linear C -> 3C), ``temperature`` (``[heads, 1, 1]``, init ``head_dim ** -0.5``), ``proj``.
    Input and output: tokens ``[B, N, C]``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.,
                 clamp_min: float = 100.0, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.head_dim = check_heads(dim, num_heads)
        self.dim = dim
        self.num_heads = num_heads
        self.clamp_min = clamp_min
        self.temperature = nn.Parameter(torch.empty(num_heads, 1, 1, **dd))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.temperature, self.head_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, N, C]`` -> ``[B, N, C]``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f'LinearAttention expects tokens [B, N, C={self.dim}], got shape {tuple(x.shape)}')
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = linear_attention(q, k, v, self.temperature, self.clamp_min)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, clamp_min={self.clamp_min}'
