"""Neighborhood attention (NA) and dilated neighborhood attention (DiNA), 1-D / 2-D / 3-D.

Semantics are NATTEN's (and those of the released NAT / DiNAT weights), per spatial axis of
length ``L`` with kernel size ``k`` and dilation ``d``:

* Dilation groups: token ``i`` belongs to group ``i % d`` and attends only to keys of its own
  group, at in-group index ``i // d``. DiNA is plain NA on each of the ``d`` interleaved sub-grids
  (groups have ``ceil((L - g) / d)`` tokens, so they differ in length when ``d`` does not divide
  ``L``).
* The window is shifted, never clipped, at borders: in group coordinates a query ``i`` sees keys
  ``s .. s + k - 1`` with ``s = clamp(i - k // 2, 0, L_g - k)``, so every query has exactly
  ``k`` keys per axis. With ``is_causal`` the window is ``max(0, i - k + 1) .. i`` instead.
* Relative positional bias: ``rpb[head, key - query + k - 1, ...]`` (in group coordinates, one
  table axis per spatial axis, each of length ``2k - 1``), added after ``q @ k * scale``.
* Non-finite inputs (``attnzoo.ops._nonfinite``): a key whose k or v holds a NaN or an infinity makes the whole
  output of exactly the queries whose window holds it NaN, on every backend.

Tensor layout is NATTEN's heads-last layout: ``[B, *spatial, heads, head_dim]``.
"""
import functools
import importlib.util
import math
import os
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from ._checks import (check_channels_last, check_dropout, check_flex_device, check_heads, check_qkv, check_scale,
                      check_tensor, triton_operands_unsupported)
from ._dispatch import add_attention_macs, exporting, flex_available, get_backend, tensors_are_traced
from ._nonfinite import nonfinite_keys, poison, zero_keys
from .window import padded_qkv_attention

__all__ = ['na1d', 'na2d', 'na3d', 'NeighborhoodAttention2D', 'natten_available', 'natten_fused_available',
           'triton_available',
           'flex_available']

IntOrTuple = Union[int, Sequence[int]]
BoolOrTuple = Union[bool, Sequence[bool]]


# ---------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------

def _per_axis(value, n: int, name: str, kind: type) -> tuple:
    """Broadcast an int/bool (or check a sequence) to a tuple of ``n`` values of type ``kind``."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f'{name} must be a {kind.__name__} or a sequence of {n} values '
                             f'(one per spatial axis), got {value!r}')
        values = tuple(value)
    else:
        values = (value,) * n
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(f'{name} must hold ints, got {value!r}')
        if kind is bool and not isinstance(v, bool):
            raise TypeError(f'{name} must hold bools, got {value!r}')
    return values


def _check_kernel_dilation(kernel_size: IntOrTuple, dilation: IntOrTuple, is_causal: BoolOrTuple,
                           n: int) -> Tuple[tuple, tuple, tuple]:
    kernel = _per_axis(kernel_size, n, 'kernel_size', int)
    dil = _per_axis(dilation, n, 'dilation', int)
    causal = _per_axis(is_causal, n, 'is_causal', bool)
    for ks in kernel:
        if ks < 2 or ks % 2 == 0:
            raise ValueError(f'kernel_size must be an odd int >= 3 on every axis, got {kernel_size!r}')
    for d in dil:
        if d < 1:
            raise ValueError(f'dilation must be an int >= 1 on every axis, got {dilation!r}')
    return kernel, dil, causal


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: tuple, dil: tuple,
                  rpb: Optional[torch.Tensor], n: int, op: str) -> None:
    check_qkv(op, q, k, v, ('B', *{1: 'L', 2: 'HW', 3: 'XYZ'}[n], 'heads', 'head_dim'))
    spatial = q.shape[1:1 + n]
    for axis, (length, ks, d) in enumerate(zip(spatial, kernel, dil)):
        if ks * d > length:
            raise ValueError(
                f'{op}: kernel_size * dilation must be <= the input size on every spatial axis; axis {axis} '
                f'has size {length} but kernel_size={ks}, dilation={d} needs >= {ks * d} '
                f'(NeighborhoodAttention2D zero-pads small maps, as the released NAT/DiNAT weights expect)')
    if rpb is not None:
        check_tensor(op, 'rpb', rpb, ('heads',) + ('2*kernel_size-1',) * n)
        expected = (q.shape[-2],) + tuple(2 * ks - 1 for ks in kernel)
        if tuple(rpb.shape) != expected:
            raise ValueError(f'{op}: rpb must have shape [heads, 2*kernel_size-1, ...] = {expected}, '
                             f'got {tuple(rpb.shape)}')
        if rpb.device != q.device:
            raise ValueError(f'{op}: rpb must be on the device of q ({q.device}), got {rpb.device}')


# ---------------------------------------------------------------------------------------------
# Per-axis geometry (undilated, in group coordinates)
# ---------------------------------------------------------------------------------------------

def _axis_mask(qi: torch.Tensor, kj: torch.Tensor, length: Union[int, torch.Tensor], kernel: int,
               causal: bool) -> torch.Tensor:
    """Whether key position ``kj`` is in the window of query position ``qi`` (broadcasting); ``length``
    may be a tensor (per-query group length, for dilation groups of unequal size)."""
    if causal:
        return (kj <= qi) & (kj > qi - kernel)
    start = (qi - kernel // 2).clamp(min=0)
    start = torch.minimum(start, length - kernel) if isinstance(length, torch.Tensor) else start.clamp(max=length - kernel)
    return (kj >= start) & (kj < start + kernel)


def _axis_rel(qi: torch.Tensor, kj: torch.Tensor, kernel: int) -> torch.Tensor:
    """RPB table index ``key - query + k - 1``, clamped into the table for masked-out pairs."""
    return (kj - qi + kernel - 1).clamp(0, 2 * kernel - 2)


def _outer(tables: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """View per-axis tables of shape ``[a0, a1, ..]`` so that they broadcast to
    ``[a0 of every axis.., a1 of every axis.., ..]`` (axis-minor, e.g. ``[nT1, nT2, T1, T2]``)."""
    n, ndim = len(tables), tables[0].dim()
    views = []
    for a, table in enumerate(tables):
        shape = [1] * (n * ndim)
        for j, size in enumerate(table.shape):
            shape[j * n + a] = size
        views.append(table.reshape(shape))
    return views


def _ravel(parts: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """Flat row-major index of broadcastable per-axis coordinates ``parts`` in a grid of ``sizes``."""
    index = parts[0]
    for part, size in zip(parts[1:], sizes[1:]):
        index = index * size + part
    return index


# ---------------------------------------------------------------------------------------------
# Caches of constant index tensors, never filled with traced or captured tensors
# ---------------------------------------------------------------------------------------------

def _untraced_cache(maxsize: int):
    """``functools.lru_cache`` for a builder of constant tensors whose last argument is their device, bypassed
    (the tensors built in the traced graph or the captured graph instead) when :func:`tensors_are_traced`: an
    entry made while exporting would hand fake tensors to every later call."""
    def wrap(build: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(build)

        @functools.wraps(build)
        def get(*args):
            return build(*args) if tensors_are_traced(args[-1]) else cached(*args)
        get.cache_clear, get.cache_info = cached.cache_clear, cached.cache_info
        return get
    return wrap


# ---------------------------------------------------------------------------------------------
# Reference backend: dense attention with the neighborhood as a mask (O(N^2) memory)
# ---------------------------------------------------------------------------------------------

def _dilated_axis_mask(length: int, kernel: int, dil: int, causal: bool, device: torch.device) -> torch.Tensor:
    """``[L, L]`` bool: whether the key at position ``j`` of one axis is in the window of the query at ``i``
    (same dilation group, inside the group's window)."""
    pos = torch.arange(length, device=device)
    group, idx = pos % dil, pos // dil
    group_len = (length - group + dil - 1) // dil
    in_window = _axis_mask(idx[:, None], idx[None, :], group_len[:, None], kernel, causal)
    return (group[:, None] == group[None, :]) & in_window


def _na_reference(q, k, v, kernel, dil, causal, rpb, scale, dropout_p):
    """Every query against every key, outside-window pairs masked: ``[B, *S, h, D]`` in and out."""
    n = len(kernel)
    B, *spatial, heads, _ = q.shape
    masks = [_dilated_axis_mask(length, ks, d, c, q.device) for length, ks, d, c in zip(spatial, kernel, dil, causal)]
    rels = []
    for length, ks, d in zip(spatial, kernel, dil):
        idx = torch.arange(length, device=q.device) // d
        rels.append(_axis_rel(idx[:, None], idx[None, :], ks))
    tokens = math.prod(spatial)  # per-axis [L_a, L_a] tables -> [N, N] over row-major tokens
    mask = functools.reduce(torch.logical_and, _outer(masks)).reshape(tokens, tokens)
    compute = torch.promote_types(q.dtype, torch.float32)
    qf = q.flatten(1, n).transpose(1, 2).to(compute)  # [B, heads, N, D]
    kf = k.flatten(1, n).transpose(1, 2).to(compute)
    vf = v.flatten(1, n).transpose(1, 2).to(compute)
    logits = (qf @ kf.transpose(-1, -2)) * scale
    if rpb is not None:
        bias = rpb.to(compute)[(slice(None), *_outer(rels))]  # [heads, L1, L2.., L1, L2..]
        logits = logits + bias.reshape(heads, tokens, tokens)
    logits = logits.masked_fill(~mask, float('-inf'))
    attn = logits.softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = (attn @ vf).to(q.dtype)
    return out.transpose(1, 2).reshape(B, *spatial, heads, v.shape[-1])


# ---------------------------------------------------------------------------------------------
# Dilation: fold the d interleaved groups of each axis into the batch dim
# ---------------------------------------------------------------------------------------------

def _fold(x: torch.Tensor, axis: int, count: int, length: int) -> torch.Tensor:
    """``[B, .., count*length, ..]`` (group-major on ``axis``) -> ``[B*count, .., length, ..]``."""
    return x.unflatten(axis, (count, length)).movedim(axis, 1).flatten(0, 1)


def _unfold(x: torch.Tensor, axis: int, count: int) -> torch.Tensor:
    """Inverse of ``_fold``."""
    return x.unflatten(0, (-1, count)).movedim(1, axis).flatten(axis, axis + 1)


@_untraced_cache(maxsize=256)
def _group_order(length: int, d: int, device: torch.device):
    """Token order that makes each dilation group contiguous, its inverse, and the chunks
    ``(count, group_length)`` of equal-length groups in that order."""
    base, rem = divmod(length, d)
    order = torch.cat([torch.arange(g, length, d, device=device) for g in range(d)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(length, device=device)
    chunks = [(rem, base + 1), (d - rem, base)] if rem else [(d, base)]
    return order, inverse, chunks


def _by_dilation_group(core: Callable, tensors: Tuple[torch.Tensor, ...], dil: tuple,
                       axis: int = 0) -> torch.Tensor:
    """Run ``core(q, k, v)`` (undilated NA) on every dilation group, one spatial axis at a time."""
    if axis == len(dil):
        return core(*tensors)
    d, dim = dil[axis], axis + 1
    if d == 1:
        return _by_dilation_group(core, tensors, dil, axis + 1)
    length = int(tensors[0].shape[dim])  # a Tensor under tracing (fvcore, jit.trace)
    if length % d == 0:  # equal groups: a view, no gather
        grouped = [t.unflatten(dim, (length // d, d)).movedim(dim + 1, 1).flatten(0, 1) for t in tensors]
        out = _by_dilation_group(core, tuple(grouped), dil, axis + 1)
        return out.unflatten(0, (-1, d)).movedim(1, dim + 1).flatten(dim, dim + 1)
    order, inverse, chunks = _group_order(length, d, tensors[0].device)
    ordered = [t.index_select(dim, order) for t in tensors]
    outs, offset = [], 0
    for count, group_len in chunks:
        part = tuple(_fold(t.narrow(dim, offset, count * group_len), dim, count, group_len) for t in ordered)
        outs.append(_unfold(_by_dilation_group(core, part, dil, axis + 1), dim, count))
        offset += count * group_len
    return torch.cat(outs, dim).index_select(dim, inverse)


# ---------------------------------------------------------------------------------------------
# Shared fast path: the window covers the whole (group) map -> plain attention
# ---------------------------------------------------------------------------------------------

def _is_full_attention(spatial: Sequence[int], kernel: tuple, causal: tuple) -> bool:
    return all(length == ks and not c for length, ks, c in zip(spatial, kernel, causal))


def _full_bias(rpb: torch.Tensor, kernel: tuple) -> torch.Tensor:
    """``[heads, N, N]`` bias of plain attention over a map equal to the kernel (N = prod k)."""
    rels = []
    for ks in kernel:
        pos = torch.arange(ks, device=rpb.device)
        rels.append(_axis_rel(pos[:, None], pos[None, :], ks))
    size = math.prod(kernel)
    index = _ravel(_outer(rels), [2 * ks - 1 for ks in kernel]).reshape(1, -1)
    return rpb.reshape(rpb.shape[0], -1).gather(1, index.expand(rpb.shape[0], -1)).view(-1, size, size)


def _attention(q, k, v, mask, dropout_p: float, scale: float) -> torch.Tensor:
    """SDPA on ``[B, h, Nq, D]``; written out when a CUDA bias needs a gradient (PyTorch's fused
    CUDA kernels reject a broadcast bias that requires grad: "LSE is not correctly aligned")."""
    if q.is_cuda and mask is not None and mask.requires_grad:
        logits = torch.matmul(q, k.transpose(-1, -2)).mul_(scale) + mask
        attn = logits.softmax(-1)
        if dropout_p:
            attn = F.dropout(attn, dropout_p)
        return torch.matmul(attn, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def _na_full(q, k, v, kernel, rpb, scale, dropout_p):
    """Plain attention over all tokens (valid when every axis length equals the kernel size)."""
    n = len(kernel)
    B, *spatial, heads, _ = q.shape
    bias = None if rpb is None else _full_bias(rpb, kernel).to(q.dtype)[None]  # 4-D: SDPA's fused path
    out = _attention(q.flatten(1, n).transpose(1, 2), k.flatten(1, n).transpose(1, 2),
                     v.flatten(1, n).transpose(1, 2), bias, dropout_p, scale)
    return out.transpose(1, 2).reshape(B, *spatial, heads, v.shape[-1])


# ---------------------------------------------------------------------------------------------
# torch backend: query tiles attend to their key halo through SDPA (memory O(N*k^2))
# ---------------------------------------------------------------------------------------------

def _tile_size(length: int, kernel: int) -> int:
    """Query tile length: about ``kernel`` tokens, balanced so the last tile is not mostly padding."""
    num_tiles = -(-length // kernel)
    return -(-length // num_tiles)


def _axis_tiles(length: int, kernel: int, causal: bool, device: torch.device):
    """Split one axis into query tiles and the key range ("halo") each tile needs.

    Returns ``(q_pos [nT, T], k_pos [nT, R], mask [nT, T, R], rel [nT, T, R])``: the query
    positions of each tile (the last tile repeats ``L-1`` as padding), the ``R = min(T+k-1, L)``
    key positions of each tile, which keys each query sees, and the RPB index of each pair.
    """
    tile = _tile_size(length, kernel)
    num_tiles = -(-length // tile)
    region = min(tile + kernel - 1, length)
    t = torch.arange(num_tiles, device=device)
    q_pos = (t[:, None] * tile + torch.arange(tile, device=device)).clamp(max=length - 1)
    first = t * tile
    if causal:
        region_start = (first - kernel + 1).clamp(0, length - region)
    else:
        region_start = (first - kernel // 2).clamp(0, length - kernel).clamp(max=length - region)
    k_pos = region_start[:, None] + torch.arange(region, device=device)
    mask = _axis_mask(q_pos[:, :, None], k_pos[:, None, :], length, kernel, causal)
    rel = _axis_rel(q_pos[:, :, None], k_pos[:, None, :], kernel)
    return q_pos, k_pos, mask, rel


class _TilePlan(NamedTuple):
    """Everything static about one tiled NA call; cached per (shape, kernel, causal, device)."""
    q_index: torch.Tensor     # [nT*TT] flat token index of each query slot, tile-major
    k_index: torch.Tensor     # [nT*RR] flat token index of each halo key, tile-major
    out_index: torch.Tensor   # [N] slot of each token in the tiled output
    mask: torch.Tensor        # [nT, TT, RR] bool: key inside the query's window
    bias_index: torch.Tensor  # [nT, TT, RR] flat RPB index; prod(2k-1) (a -inf slot) when masked
    num_tiles: int
    tile_tokens: int
    halo_tokens: int


@_untraced_cache(maxsize=256)
def _tile_plan(spatial: tuple, kernel: tuple, causal: tuple, device: torch.device) -> _TilePlan:
    geo = [_axis_tiles(length, ks, c, device) for length, ks, c in zip(spatial, kernel, causal)]
    q_pos, k_pos, masks, rels = zip(*geo)
    num_tiles = [p.shape[0] for p in q_pos]
    tiles = [p.shape[1] for p in q_pos]
    regions = [p.shape[1] for p in k_pos]
    q_index = _ravel(_outer(q_pos), spatial).flatten()
    k_index = _ravel(_outer(k_pos), spatial).flatten()
    mask = functools.reduce(torch.logical_and, _outer(masks))
    rel_flat = _ravel(_outer(rels), [2 * ks - 1 for ks in kernel])
    bias_index = rel_flat.masked_fill(~mask, math.prod([2 * ks - 1 for ks in kernel]))
    # Slot of token p in the [nT.., T..] query layout: tile p // T and offset p % T per axis.
    coords = [torch.arange(length, device=device) for length in spatial]
    tile_of = _outer([c // t for c, t in zip(coords, tiles)])
    offset_of = _outer([c % t for c, t in zip(coords, tiles)])
    out_index = _ravel(list(tile_of) + list(offset_of), num_tiles + tiles).flatten()
    nt, tt, rr = math.prod(num_tiles), math.prod(tiles), math.prod(regions)
    return _TilePlan(q_index, k_index, out_index, mask.reshape(nt, tt, rr), bias_index.reshape(nt, tt, rr),
                     nt, tt, rr)


def _na_tiled(q, k, v, kernel, causal, rpb, scale, dropout_p):
    """Undilated NA: each tile of ~k^n queries attends to its (T+k-1)^n key halo through SDPA."""
    n = len(kernel)
    B, *spatial, heads, _ = q.shape
    if _is_full_attention(spatial, kernel, causal):
        return _na_full(q, k, v, kernel, rpb, scale, dropout_p)
    plan = _tile_plan(tuple(spatial), kernel, causal, q.device)
    nt, tt, rr = plan.num_tiles, plan.tile_tokens, plan.halo_tokens

    N = math.prod(spatial)  # explicit sizes, never -1: a batch of 0 makes a -1 ambiguous

    def tiles(x, index, tokens):  # [B, *S, h, D] -> [B, h*nT, tokens, D]
        rows = x.flatten(1, n).transpose(1, 2).reshape(B * heads, N, x.shape[-1])  # contiguous rows
        return rows.index_select(1, index).view(B, heads * nt, tokens, x.shape[-1])

    if rpb is None:
        mask = plan.mask[None].expand(heads, nt, tt, rr).reshape(1, heads * nt, tt, rr)
    else:
        # The table stays in rpb's dtype (fp32 under autocast) and only the gathered bias is cast: the gather's
        # backward scatter-adds B*N*k^n gradients into a few hundred entries, which a bf16 table cannot hold.
        # gather (whose backward is a scatter-add) rather than indexing (a serialised index_put).
        table = torch.cat([rpb.reshape(heads, -1), rpb.new_full((heads, 1), float('-inf'))], 1)
        mask = table.gather(1, plan.bias_index.view(1, -1).expand(heads, -1)).to(q.dtype).view(1, heads * nt, tt, rr)
    out = _attention(tiles(q, plan.q_index, tt), tiles(k, plan.k_index, rr), tiles(v, plan.k_index, rr),
                     mask, dropout_p, scale)
    out = out.reshape(B * heads, nt * tt, v.shape[-1]).index_select(1, plan.out_index)  # [B*h, N, Dv]
    return out.view(B, heads, N, v.shape[-1]).transpose(1, 2).reshape(B, *spatial, heads, v.shape[-1])


# ---------------------------------------------------------------------------------------------
# flex backend: torch flex_attention with a block-sparse neighborhood mask (CUDA)
# ---------------------------------------------------------------------------------------------

# One compiled flex_attention serves every layer; each (shape, kernel, causal, rpb?, grad mode,
# dtype) is one specialisation. A DiNAT needs a handful, but a benchmark or a mixed
# train/eval run passes dynamo's default limit of 8, after which flex would silently fall back
# to its unfused O(N^2) path. The limit is raised on the first flex call (never at import, never
# for a process that does not use flex) and process-wide, because dynamo has no per-function
# limit and a scoped ``torch._dynamo.config.patch`` around the call cannot be traced: inside a
# model the user compiles (the tools' --compile), where this call is inlined into the user's
# frames, it is an unsupported context manager (a graph break; an error under fullgraph=True).
# It is only ever raised (``max``), never lowered.
_FLEX_RECOMPILE_LIMIT = 64


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention
    config = torch._dynamo.config
    name = 'recompile_limit' if hasattr(config, 'recompile_limit') else 'cache_size_limit'
    setattr(config, name, max(getattr(config, name), _FLEX_RECOMPILE_LIMIT))
    return torch.compile(flex_attention, dynamic=False)


def _token_coords(idx: torch.Tensor, spatial: Sequence[int]) -> List[torch.Tensor]:
    """Row-major flat token index -> per-axis coordinates."""
    coords = []
    for length in reversed(spatial[1:]):
        coords.append(idx % length)
        idx = idx // length
    coords.append(idx)
    return coords[::-1]


def _flex_mask_mod(spatial: tuple, kernel: tuple, causal: tuple):
    def mask_mod(b, h, q_idx, kv_idx):
        qc, kc = _token_coords(q_idx, spatial), _token_coords(kv_idx, spatial)
        keep = _axis_mask(qc[0], kc[0], spatial[0], kernel[0], causal[0])
        for a in range(1, len(spatial)):
            keep = keep & _axis_mask(qc[a], kc[a], spatial[a], kernel[a], causal[a])
        return keep
    return mask_mod


@_untraced_cache(maxsize=64)
def _flex_block_mask(spatial: tuple, kernel: tuple, causal: tuple, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask
    tokens = math.prod(spatial)
    return create_block_mask(_flex_mask_mod(spatial, kernel, causal), B=None, H=None,
                             Q_LEN=tokens, KV_LEN=tokens, device=device)


def _flex_rpb_score_mod(rpb: torch.Tensor, spatial: tuple, kernel: tuple):
    def score_mod(score, b, h, q_idx, kv_idx):
        qc, kc = _token_coords(q_idx, spatial), _token_coords(kv_idx, spatial)
        index = tuple(_axis_rel(qa, ka, ks) for qa, ka, ks in zip(qc, kc, kernel))
        return score + rpb[(h, *index)]
    return score_mod


def _na_flex(q, k, v, kernel, causal, rpb, scale):
    """Undilated NA through flex_attention; full-map windows go to SDPA."""
    n = len(kernel)
    B, *spatial, heads, _ = q.shape
    if _is_full_attention(spatial, kernel, causal):
        return _na_full(q, k, v, kernel, rpb, scale, 0.0)
    spatial = tuple(spatial)
    block_mask = _flex_block_mask(spatial, kernel, causal, q.device)
    score_mod = None if rpb is None else _flex_rpb_score_mod(rpb, spatial, kernel)  # fp32 scores, fp32 bias grad
    out = _compiled_flex_attention()(
        q.flatten(1, n).transpose(1, 2), k.flatten(1, n).transpose(1, 2), v.flatten(1, n).transpose(1, 2),
        score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.transpose(1, 2).reshape(B, *spatial, heads, v.shape[-1])


# ---------------------------------------------------------------------------------------------
# natten backend: NATTEN's fused kernels (no RPB, no attention dropout)
# ---------------------------------------------------------------------------------------------

# The availability checks import packages: torch.compile takes their results as constants (an import inside a
# traced function is a graph break) and they are cached per process.
_AVAILABLE: dict = {}


@torch.compiler.assume_constant_result
def natten_available() -> bool:
    """Whether NATTEN is installed (``use_backend('natten')`` works; on CPU it is NATTEN's slow,
    forward-only flex path)."""
    if 'natten' not in _AVAILABLE:
        try:
            import natten  # noqa: F401
            _AVAILABLE['natten'] = True
        except ImportError:
            _AVAILABLE['natten'] = False
    return _AVAILABLE['natten']


@torch.compiler.assume_constant_result
def natten_fused_available() -> bool:
    """Whether NATTEN's compiled library (its fused CUDA kernels) is present: only then does ``auto`` pick it."""
    if 'natten_fused' not in _AVAILABLE:
        fused = False
        if natten_available():
            import natten
            fused = bool(getattr(natten, 'HAS_LIBNATTEN', False))
        _AVAILABLE['natten_fused'] = fused
    return _AVAILABLE['natten_fused']


def _na_natten(q, k, v, kernel, dil, causal, scale):
    import natten
    fn = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[len(kernel)]
    return fn(q, k, v, kernel_size=kernel, dilation=dil, is_causal=causal, scale=scale)


# ---------------------------------------------------------------------------------------------
# triton backend: attnzoo's fused 2-D kernels (``_na_triton.py``): dilation and RPB in-kernel
# ---------------------------------------------------------------------------------------------



def _triton_interpreted() -> bool:
    return os.environ.get('TRITON_INTERPRET') == '1'


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """Whether Triton is installed and something can run its kernels: a CUDA device, or Triton's CPU
    interpreter (``TRITON_INTERPRET=1`` set before the first call)."""
    if 'triton' not in _AVAILABLE:
        _AVAILABLE['triton'] = (importlib.util.find_spec('triton') is not None
                                and (torch.cuda.is_available() or _triton_interpreted()))
    return _AVAILABLE['triton']


def _triton_unsupported(q: torch.Tensor, v: torch.Tensor, n: int, causal: tuple, dropout_p: float) -> Optional[str]:
    """Why the fused Triton kernels cannot run these arguments, or None when they can."""
    if n != 2:
        return f'{n}-D inputs (the kernels are 2-D)'
    if any(causal):
        return f'is_causal={causal}'
    if dropout_p > 0:
        return f'dropout_p={dropout_p}'
    operands = triton_operands_unsupported(q, v)
    if operands is not None:
        return operands
    if not (q.is_cuda or _triton_interpreted()):
        return f'tensors on {q.device} (the kernels need CUDA)'
    return None


# ---------------------------------------------------------------------------------------------
# The fused kernels as a torch.library custom op: opaque to torch.compile (no graph break), with autograd
# ---------------------------------------------------------------------------------------------

@torch.library.custom_op('attnzoo::na2d_fused', mutates_args=())
def _na2d_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor], kernel_h: int,
                kernel_w: int, dil_h: int, dil_w: int, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused 2-D NA: ``[B, H, W, heads, D]`` q, k, v, optional ``[heads, 2k_h-1, 2k_w-1]`` bias ->
    (out ``[B, H, W, heads, D]``, log2-sum-exp ``[B, H, W, heads]`` fp32)."""
    from . import _na_triton  # imports Triton: only when the kernels run (never while torch.compile traces)
    return _na_triton.na2d_forward(q, k, v, rpb, (kernel_h, kernel_w), (dil_h, dil_w), scale)


@_na2d_fused.register_fake
def _na2d_fused_fake(q, k, v, rpb, kernel_h, kernel_w, dil_h, dil_w, scale):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op('attnzoo::na2d_fused_backward', mutates_args=())
def _na2d_fused_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         out: torch.Tensor, lse: torch.Tensor, rpb: Optional[torch.Tensor], kernel_h: int,
                         kernel_w: int, dil_h: int, dil_w: int, scale: float,
                         rpb_grad: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, drpb)``; ``drpb`` is empty unless ``rpb_grad``."""
    from . import _na_triton
    dq, dk, dv, drpb = _na_triton.na2d_backward(grad_out, q, k, v, out, lse, rpb, (kernel_h, kernel_w),
                                                (dil_h, dil_w), scale, rpb_grad)
    return dq, dk, dv, (drpb if rpb_grad else q.new_empty(0))


@_na2d_fused_backward.register_fake
def _na2d_fused_backward_fake(grad_out, q, k, v, out, lse, rpb, kernel_h, kernel_w, dil_h, dil_w, scale, rpb_grad):
    grads = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v)]
    return (*grads, torch.empty_like(rpb) if rpb_grad else q.new_empty(0))


def _na2d_fused_setup(ctx, inputs, output):
    q, k, v, rpb, kernel_h, kernel_w, dil_h, dil_w, scale = inputs
    ctx.save_for_backward(q, k, v, rpb, *output)
    ctx.params = (kernel_h, kernel_w, dil_h, dil_w, scale)


def _na2d_fused_bwd(ctx, grad_out, grad_lse):
    q, k, v, rpb, out, lse = ctx.saved_tensors
    rpb_grad = rpb is not None and ctx.needs_input_grad[3]
    dq, dk, dv, drpb = _na2d_fused_backward(grad_out, q, k, v, out, lse, rpb, *ctx.params, rpb_grad)
    return dq, dk, dv, (drpb if rpb_grad else None), None, None, None, None, None


_na2d_fused.register_autograd(_na2d_fused_bwd, setup_context=_na2d_fused_setup)


class _NA2dFusedFunction(torch.autograd.Function):
    """Eager autograd of the same kernels as the custom op above, without the custom op's dispatch: on the
    H200's host that dispatch cost about 0.25 ms per layer's forward + backward (``backend_choices.py overhead``),
    which bounds a DiNAT training step there. ``torch.compile`` traces the custom op instead."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dil, scale):
        from . import _na_triton
        out, lse = _na_triton.na2d_forward(q, k, v, rpb, kernel, dil, scale)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.params = (kernel, dil, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from . import _na_triton
        q, k, v, rpb, out, lse = ctx.saved_tensors
        rpb_grad = rpb is not None and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = _na_triton.na2d_backward(grad_out, q, k, v, out, lse, rpb, *ctx.params, rpb_grad)
        return dq, dk, dv, drpb, None, None, None


def _na_triton(q, k, v, kernel, dil, rpb, scale):
    if torch.compiler.is_compiling():
        out, _ = _na2d_fused(q, k, v, rpb, kernel[0], kernel[1], dil[0], dil[1], float(scale))
        return out
    return _NA2dFusedFunction.apply(q, k, v, rpb, tuple(kernel), tuple(dil), float(scale))


# ---------------------------------------------------------------------------------------------
# Public functional API
# ---------------------------------------------------------------------------------------------

# ``auto`` compiles flex for at most this many map shapes (each costs seconds of compilation), then sends new
# shapes to the tiled path: detection / segmentation inputs of ever-changing sizes would otherwise compile on
# every image until dynamo's limit, past which flex falls back to dense O(N^2) attention.
_FLEX_MAX_SHAPES = 8
_flex_shapes: set = set()


def _flex_shape_admitted(q: torch.Tensor) -> bool:
    shape = tuple(q.shape[1:-2])
    if shape in _flex_shapes:
        return True
    if len(_flex_shapes) >= _FLEX_MAX_SHAPES:
        return False
    _flex_shapes.add(shape)
    return True


def _select_backend(q: torch.Tensor, v: torch.Tensor, rpb, kernel: tuple, dil: tuple, causal: tuple,
                    dropout_p: float, n: int, op: str) -> str:
    requested = get_backend()
    if requested == 'auto':
        if q.is_cuda and not exporting():
            if natten_fused_available() and rpb is None and dropout_p == 0:
                return 'natten'
            # Measured on an H200 (benchmarks/README.md): the fused Triton kernels are the fastest path whenever
            # there is an RPB, and for bias-free sliding windows; a bias-free map whose every dilation group
            # equals the kernel is plain attention, which SDPA's fused kernel (the torch path) runs faster.
            full = rpb is None and all(length == ks * d for length, ks, d in zip(q.shape[1:1 + n], kernel, dil))
            if not full and triton_available() and _triton_unsupported(q, v, n, causal, dropout_p) is None:
                return 'triton'
            # flex's score_mod bias is slow (its bias gradient is accumulated with contended atomics) and it
            # compiles once per map shape, so it serves only bias-free NA the Triton kernels do not cover.
            if flex_available() and dropout_p == 0 and rpb is None and not full and _flex_shape_admitted(q):
                return 'flex'
        return 'torch'
    if requested == 'flex':
        check_flex_device(op, q)
        if dropout_p > 0:
            raise ValueError(f"{op}: backend 'flex' has no attention dropout (dropout_p={dropout_p}); "
                             "use 'torch' or 'auto'")
    if requested == 'triton':
        if not triton_available():
            raise RuntimeError(f"{op}: backend 'triton' needs Triton and a CUDA device")
        reason = _triton_unsupported(q, v, n, causal, dropout_p)
        if reason is not None:
            raise ValueError(f"{op}: backend 'triton' does not support {reason}; use 'torch' or 'auto'")
    if requested == 'natten':
        if not natten_available():
            raise RuntimeError(f"{op}: backend 'natten' needs NATTEN installed (pip install attnzoo[natten])")
        if rpb is not None or dropout_p > 0:
            raise ValueError(f"{op}: backend 'natten' supports neither rpb nor dropout_p > 0; "
                             "use 'torch', 'flex' or 'auto'")
    return requested


def _neighborhood_attention(q, k, v, kernel_size, dilation, is_causal, rpb, scale, dropout_p, n, op):
    kernel, dil, causal = _check_kernel_dilation(kernel_size, dilation, is_causal, n)
    _check_inputs(q, k, v, kernel, dil, rpb, n, op)
    check_scale(op, 'scale', scale)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    check_dropout(op, dropout_p)
    batch, heads = q.shape[0], q.shape[-2]
    add_attention_macs(batch * heads * math.prod(q.shape[1:1 + n]) * math.prod(kernel)
                       * (q.shape[-1] + v.shape[-1]))
    backend = _select_backend(q, v, rpb, kernel, dil, causal, dropout_p, n, op)
    # Non-finite keys (``_nonfinite``): zeroed before, their queries set to NaN after. The Triton forward kernel
    # does both per key block inside the kernel instead, which costs its hot path no extra pass.
    bad = None if backend == 'triton' else nonfinite_keys(k, v)
    if bad is not None:
        k, v = zero_keys(k, bad), zero_keys(v, bad)
    out = _run_backend(backend, q, k, v, kernel, dil, causal, rpb, scale, dropout_p)
    return out if bad is None else poison(out, _attends_to(bad, kernel, dil, causal))


def _run_backend(backend, q, k, v, kernel, dil, causal, rpb, scale, dropout_p):
    if not q.shape[0] and backend in ('natten', 'triton'):
        backend = 'torch'  # an empty batch has nothing to compute, and NATTEN and the Triton backward reject it
    if backend == 'reference':
        return _na_reference(q, k, v, kernel, dil, causal, rpb, scale, dropout_p)
    if backend == 'triton':
        return _na_triton(q, k, v, kernel, dil, rpb, scale)
    if backend == 'natten':
        return _na_natten(q, k, v, kernel, dil, causal, scale)
    if backend == 'flex':
        core = functools.partial(_na_flex, kernel=kernel, causal=causal, rpb=rpb, scale=scale)
    else:
        core = functools.partial(_na_tiled, kernel=kernel, causal=causal, rpb=rpb, scale=scale,
                                 dropout_p=dropout_p)
    return _by_dilation_group(core, (q, k, v), dil)


def _attends_to(keys: torch.Tensor, kernel: tuple, dil: tuple, causal: tuple) -> torch.Tensor:
    """bool ``[B, *S, heads]`` of keys -> bool ``[B, *S, heads]``: the queries whose window holds one of them
    (the window is a product of per-axis windows, so one ``[L, L]`` product per axis)."""
    hits = keys.float()  # counts stay below prod(kernel): exact in fp32
    for axis, (length, ks, d, c) in enumerate(zip(keys.shape[1:-1], kernel, dil, causal)):
        window = _dilated_axis_mask(length, ks, d, c, keys.device).float()  # [query, key]
        hits = (hits.movedim(axis + 1, -1) @ window.T).movedim(-1, axis + 1)
    return hits > 0


def na1d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
         is_causal: BoolOrTuple = False, rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None,
         dropout_p: float = 0.0) -> torch.Tensor:
    """1-D neighborhood attention.

    Args:
        q, k: ``[B, L, heads, head_dim]``; v: ``[B, L, heads, head_dim_v]``.
        kernel_size: odd window size >= 3; dilation: >= 1, ``kernel_size * dilation <= L``.
        is_causal: keys ``max(0, i-k+1) .. i`` instead of the centred window.
        rpb: optional relative positional bias ``[heads, 2k-1]``.
        scale: logit scale, default ``head_dim ** -0.5`` (the bias is not scaled).
        dropout_p: attention dropout (only meaningful in training).
    Returns:
        ``[B, L, heads, head_dim_v]``.
    """
    return _neighborhood_attention(q, k, v, kernel_size, dilation, is_causal, rpb, scale, dropout_p, 1, 'na1d')


def na2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
         is_causal: BoolOrTuple = False, rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None,
         dropout_p: float = 0.0) -> torch.Tensor:
    """2-D neighborhood attention (NATTEN ``na2d`` semantics, plus NAT's relative positional bias).

    Args:
        q, k: ``[B, H, W, heads, head_dim]``; v: ``[B, H, W, heads, head_dim_v]``.
        kernel_size: odd int >= 3 or a per-axis pair; dilation: int >= 1 or a pair, with
            ``kernel_size * dilation <= (H, W)``.
        is_causal: bool or per-axis pair.
        rpb: optional ``[heads, 2k_h-1, 2k_w-1]`` table indexed by ``key - query + k - 1``.
        scale: logit scale, default ``head_dim ** -0.5``.
        dropout_p: attention dropout (only meaningful in training).
    Returns:
        ``[B, H, W, heads, head_dim_v]``.
    """
    return _neighborhood_attention(q, k, v, kernel_size, dilation, is_causal, rpb, scale, dropout_p, 2, 'na2d')


def na3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
         is_causal: BoolOrTuple = False, rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None,
         dropout_p: float = 0.0) -> torch.Tensor:
    """3-D neighborhood attention on ``[B, X, Y, Z, heads, head_dim]``; arguments as ``na2d`` with
    per-axis triples and ``rpb`` of shape ``[heads, 2k_x-1, 2k_y-1, 2k_z-1]``."""
    return _neighborhood_attention(q, k, v, kernel_size, dilation, is_causal, rpb, scale, dropout_p, 3, 'na3d')


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------

@register_notrace_module  # FX: a leaf (shape checks and backend choice are Python control flow)
class NeighborhoodAttention2D(nn.Module):
    """Multi-head 2-D neighborhood attention layer with the parameter names of the NAT/DiNAT weights.

    Owns ``qkv`` (Linear C -> 3C), ``rpb`` (``[heads, 2k-1, 2k-1]``, when ``rel_pos_bias``) and
    ``proj``. Maps smaller than ``kernel_size * dilation`` are zero-padded right/bottom before
    ``qkv`` and cropped before ``proj`` (NATTEN <= 0.15 behaviour, which the released weights
    expect: padded tokens carry the qkv bias and are not masked).

    Input and output: ``[B, H, W, C]`` (channels-last).
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
                 is_causal: BoolOrTuple = False, qkv_bias: bool = True, rel_pos_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.head_dim = check_heads(dim, num_heads)
        self.kernel_size, self.dilation, self.is_causal = _check_kernel_dilation(kernel_size, dilation, is_causal, 2)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.empty(num_heads, 2 * self.kernel_size[0] - 1,
                                                2 * self.kernel_size[1] - 1, **dd))
        else:
            self.register_parameter('rpb', None)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.rpb is not None:
            nn.init.trunc_normal_(self.rpb, std=.02, a=-2., b=2.)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        check_channels_last('NeighborhoodAttention2D', x, self.dim)
        H, W = x.shape[1:3]
        pad_h = max(0, self.kernel_size[0] * self.dilation[0] - H)
        pad_w = max(0, self.kernel_size[1] * self.dilation[1] - W)
        attend = functools.partial(na2d, kernel_size=self.kernel_size, dilation=self.dilation,
                                   is_causal=self.is_causal, rpb=self.rpb, scale=self.scale,
                                   dropout_p=self.attn_drop if self.training else 0.0)
        return padded_qkv_attention(self, x, pad_h, pad_w, attend)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, is_causal={self.is_causal}, rel_pos_bias={self.rpb is not None}')
