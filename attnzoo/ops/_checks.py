"""Argument checks shared by the attention ops and their layers.

Every error names the op (``op``, e.g. ``'na2d'``), the argument, the value it got and what is valid.
``dims`` spells a tensor layout as dimension names, e.g. ``('B', 'heads', 'N', 'head_dim')``.
"""
import numbers
from typing import Optional, Sequence

import torch

from ._dispatch import flex_available, get_backend

# Backends with an implementation for the window / linear / factorized ops ('auto' means 'torch').
SIMPLE_BACKENDS = ('auto', 'torch', 'reference')


def _layout(dims: Sequence[str]) -> str:
    return '[' + ', '.join(dims) + ']'


def check_tensor(op: str, name: str, t, dims: Sequence[str]) -> None:
    """``t`` is a floating-point ``torch.Tensor`` with one dim per entry of ``dims``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{op}: {name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dim() != len(dims):
        raise ValueError(f'{op}: {name} must have {len(dims)} dims {_layout(dims)}, got shape {tuple(t.shape)}')
    if not t.is_floating_point():
        raise TypeError(f'{op}: {name} must be a floating-point tensor, got {t.dtype}')


def check_same_dtype(op: str, **tensors: torch.Tensor) -> None:
    """All ``tensors`` (keyword = argument name) share one dtype."""
    dtypes = [t.dtype for t in tensors.values()]
    if len(set(dtypes)) > 1:
        raise TypeError(f'{op}: {", ".join(tensors)} must share one dtype, got {", ".join(map(str, dtypes))}')


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """All ``tensors`` (keyword = argument name) are on one device."""
    devices = [t.device for t in tensors.values()]
    if len(set(devices)) > 1:
        raise ValueError(f'{op}: {", ".join(tensors)} must be on one device, got {", ".join(map(str, devices))}')


def check_qkv(op: str, q, k, v, dims: Sequence[str]) -> None:
    """Self-attention inputs: q, k of layout ``dims`` and one shape; v like q but for the last dim (head_dim_v);
    one dtype and one device."""
    for name, t in (('q', q), ('k', k), ('v', v)):
        check_tensor(op, name, t, dims)
    if k.shape != q.shape:
        raise ValueError(f'{op}: k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}')
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f'{op}: v must match q on every dim but head_dim: q {tuple(q.shape)}, v {tuple(v.shape)}')
    check_same_dtype(op, q=q, k=k, v=v)
    check_same_device(op, q=q, k=k, v=v)
    check_head_dim(op, q)


def check_head_dim(op: str, q: torch.Tensor) -> None:
    """q's last dim (head_dim, which the default scale ``head_dim ** -0.5`` divides by) is at least 1."""
    if q.shape[-1] < 1:
        raise ValueError(f'{op}: head_dim (the last dim of q and k) must be >= 1, got shape {tuple(q.shape)}')


def check_real(op: str, name: str, value, optional: bool = False) -> None:
    """``value`` is a real Python/NumPy number (not a bool), or None when ``optional`` (the op's default)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{op}: {name} must be a real number{" or None" if optional else ""}, got {value!r}')


def check_scale(op: str, name: str, value) -> None:
    """An optional logit scale: None (the op's default) or a real number."""
    check_real(op, name, value, optional=True)


def check_key_tokens(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: str) -> None:
    """Heads-first attention of ``Nq`` queries over another number of keys (called ``tokens``): k is
    ``[B, heads, tokens, head_dim]`` with B, heads, head_dim of q, v matches k on ``[B, heads, tokens]``; one dtype,
    one device, head_dim >= 1."""
    if k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(f'{op}: k must be [B, heads, {tokens}, head_dim] with B, heads, head_dim of q '
                         f'{tuple(q.shape)}, got {tuple(k.shape)}')
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f'{op}: v must match k on [B, heads, {tokens}]: k {tuple(k.shape)}, v {tuple(v.shape)}')
    check_same_dtype(op, q=q, k=k, v=v)
    check_same_device(op, q=q, k=k, v=v)
    check_head_dim(op, q)


def check_dropout(op: str, dropout_p: float) -> None:
    """Attention dropout probability in ``[0, 1)``."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f'{op}: dropout_p must be a real number in [0, 1), got {dropout_p!r}')
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f'{op}: dropout_p must be in [0, 1), got {dropout_p}')


def check_int_range(op: str, name: str, value, low: int, high: int, high_text: str) -> None:
    """``value`` is an int (not a bool) in ``[low, high]``; ``high_text`` spells the bound in the message."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'{op}: {name} must be an int in [{low}, {high_text}], got {value!r}')


def check_index_values(op: str, name: str, indices: torch.Tensor, high: int, high_text: str, flag: str) -> None:
    """Every entry of ``indices`` ``[..., K]`` lies in ``[0, high)`` and no row (last dim) holds one twice (a
    repeated index would count twice in a gather and once in a mask). One device sync: the ops call it behind their
    ``flag`` argument, which the message names."""
    lo, hi = torch.aminmax(indices)
    ordered = indices.sort(-1).values
    repeats = (ordered[..., 1:] == ordered[..., :-1]).sum()
    lo, hi, repeats = torch.stack([lo.long(), hi.long(), repeats]).tolist()
    if lo < 0 or hi >= high:
        raise ValueError(f'{op}: {name} must lie in [0, {high_text}), got values in [{lo}, {hi}]')
    if repeats:
        raise ValueError(f'{op}: {name} must hold distinct entries in every row, got {repeats} repeated entries '
                         f'(pass {flag}=False only for indices known to be distinct and in range, e.g. from topk)')


def check_heads(dim: int, num_heads: int) -> int:
    """A layer's ``dim`` splits into ``num_heads`` heads; returns ``head_dim``."""
    if dim % num_heads:
        raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
    return dim // num_heads


def check_channels_last(layer: str, x: torch.Tensor, dim: int) -> None:
    """The input of a map-attention layer is ``[B, H, W, C=dim]``."""
    if x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(f'{layer} expects [B, H, W, C={dim}] (channels-last), got shape {tuple(x.shape)}')


def check_flex_device(op: str, q: torch.Tensor) -> None:
    """Backend ``flex`` was requested: it needs CUDA tensors and ``flex_attention``."""
    if not q.is_cuda or not flex_available():
        raise RuntimeError(f"{op}: backend 'flex' runs on CUDA tensors only (got device {q.device}); "
                           "use 'torch' or 'auto'")


def check_simple_backend(op: str, note: str = "its 'torch' path already runs on PyTorch's fused SDPA") -> str:
    """The backend requested by ``use_backend`` (``'auto'`` kept) for an op with only ``reference`` and ``torch``
    paths; any other is a ValueError carrying ``note`` (why there is no other path): a forced backend runs or
    raises."""
    requested = get_backend()
    if requested not in SIMPLE_BACKENDS:
        raise ValueError(f"{op}: backend {requested!r} is not implemented for this op (it supports "
                         f"{SIMPLE_BACKENDS}); {note}")
    return requested


def select_simple_backend(op: str) -> str:
    """The backend an op with only ``reference`` and ``torch`` paths runs under the current ``use_backend``."""
    requested = check_simple_backend(op)
    return 'torch' if requested == 'auto' else requested


# The fused Triton kernels of NA and of Sparsifiner's connectivity attention: q and v head dims equal and one of these.
TRITON_HEAD_DIMS = (16, 32, 64, 128)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_operands_unsupported(q: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    """Why those kernels cannot take ``q`` / ``v`` (``[..., head_dim]``) by head dim or dtype, or None."""
    if q.shape[-1] not in TRITON_HEAD_DIMS or v.shape[-1] != q.shape[-1]:
        return (f'head_dim {q.shape[-1]} (v: {v.shape[-1]}); they need q and v head_dim equal and one of '
                f'{TRITON_HEAD_DIMS}')
    if q.dtype not in TRITON_DTYPES:
        return f'dtype {q.dtype} (one of {TRITON_DTYPES} is needed)'
    return None
