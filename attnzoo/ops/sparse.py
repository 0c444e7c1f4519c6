"""Top-k sparse attention: every query attends to its own set of selected keys (Sparsifiner).

Tensor layout is SDPA's heads-first layout ``[B, heads, N, head_dim]`` (the layout of a ViT's qkv
split, where the connectivity predictor lives).

Connectivity is given either as

* ``indices``: ``[B, heads, Nq - dense_rows, K]`` key positions per query (each row's entries
  distinct), or
* ``mask``: a boolean ``[B, heads, Nq, Nk]`` connectivity matrix (rows may keep different numbers
  of keys; a row that keeps none outputs zeros, as the official code's ``nan_to_num`` does for it).

The first ``dense_rows`` query rows attend to every key (Sparsifiner keeps the class-token row
dense); with ``indices`` those rows have no entry in ``indices``.

Backends (``attnzoo.ops.use_backend``):
    reference  what the official code does: dense ``q @ k^T``, entries outside the connectivity
               filled with ``-inf``, softmax, ``nan_to_num``, ``@ v``. O(Nq*Nk) work and memory
               whatever the keep rate.
    torch      ``attn @ v`` is an ``embedding_bag`` over the ``K`` selected value rows of each
               query (reads K rows per query, materialises nothing: O(Nq*K*Dv)) and the softmax
               runs over ``K`` logits, so those fall with the keep rate; the logits are one dense
               ``q @ k^T`` GEMM followed by a gather of the ``K`` selected entries (at ViT token
               counts a GEMM beats every per-query gather of K key rows we measured). Memory
               O(Nq*Nk) for the logits, O(Nq*K) after. Autograd everywhere (gather and
               embedding_bag backward are scatter-adds). The dense rows use SDPA.
``auto`` picks ``torch`` on the CPU. On CUDA it runs the connectivity as a boolean mask of one fused SDPA
call: at 197 tokens the gather path measured 13-40x slower than fused dense attention on an H200 (the
``[B, heads, N, K]`` index tensor alone moves as many bytes as q, k and v; benchmarks/README.md), so a GPU
gains nothing from skipping keys at ViT token counts. ``torch`` on CUDA still runs the gather (whose cost
falls with the keep rate). There is no flex/NATTEN/Triton kernel for unstructured top-k connectivity: ``flex``,
``natten`` and ``triton`` requests raise a ValueError. Every path is checked against ``reference`` on CUDA by
``tests/ops/test_sparse_cuda.py``.

Non-finite keys and values follow ``attnzoo.ops._nonfinite`` on every path (the rows that attend to one are NaN);
only a row that keeps no key is set to 0, so a NaN of any other row shows.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ._checks import (check_dropout, check_index_values, check_int_range, check_key_tokens, check_scale,
                      check_simple_backend, check_tensor)
from ._dispatch import add_attention_macs, exporting
from ._nonfinite import nonfinite_keys, poison, zero_keys

__all__ = ['topk_attention', 'topk_attention_macs', 'keep_budget', 'indices_to_mask', 'mask_to_indices']


# ---------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------

def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, op: str) -> None:
    for name, t in (('q', q), ('k', k), ('v', v)):
        check_tensor(op, name, t, ('B', 'heads', 'N', 'head_dim'))
    check_key_tokens(op, q, k, v, 'Nk')


def _check_connectivity(q, k, indices, mask, dense_rows: int, op: str,
                        check_values: bool = True) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    B, H, Nq, _ = q.shape
    Nk = k.shape[2]
    if (indices is None) == (mask is None):
        raise ValueError(f'{op}: pass exactly one of indices= ([B, heads, Nq - dense_rows, K] key positions) '
                         f'or mask= ([B, heads, Nq, Nk] bool)')
    check_int_range(op, 'dense_rows', dense_rows, 0, Nq, f'Nq={Nq}')
    if indices is not None:
        if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f'{op}: indices must be an int64/int32 tensor, got '
                            f'{getattr(indices, "dtype", type(indices).__name__)}')
        expected = (B, H, Nq - dense_rows)
        if indices.dim() != 4 or any(s not in (1, e) for s, e in zip(indices.shape[:2], expected[:2])) \
                or indices.shape[2] != expected[2]:
            raise ValueError(f'{op}: indices must have shape [B={B} (or 1), heads={H} (or 1), Nq - dense_rows='
                             f'{Nq - dense_rows}, K], got {tuple(indices.shape)}')
        K = indices.shape[-1]
        if not 1 <= K <= Nk:
            raise ValueError(f'{op}: indices must select 1 <= K <= Nk={Nk} keys per query, got K={K}')
        if indices.device != q.device:
            raise ValueError(f'{op}: indices must be on the device of q ({q.device}), got {indices.device}')
        # a value check needs data, and costs a device sync (and a graph break under torch.compile)
        if check_values and indices.numel() and indices.device.type != 'meta' \
                and not torch.compiler.is_compiling():
            check_index_values(op, 'indices', indices, Nk, f'Nk={Nk}', 'check_indices')
        return indices.long().expand(B, H, -1, -1), None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f'{op}: mask must be a bool tensor, got {getattr(mask, "dtype", type(mask).__name__)}')
    if mask.dim() != 4 or mask.shape[2:] != (Nq, Nk) or any(s not in (1, e) for s, e in zip(mask.shape[:2], (B, H))):
        raise ValueError(f'{op}: mask must have shape [B={B} (or 1), heads={H} (or 1), Nq={Nq}, Nk={Nk}], '
                         f'got {tuple(mask.shape)}')
    if mask.device != q.device:
        raise ValueError(f'{op}: mask must be on the device of q ({q.device}), got {mask.device}')
    return None, mask.expand(B, H, Nq, Nk)


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------

def indices_to_mask(indices: torch.Tensor, num_keys: int, dense_rows: int = 0) -> torch.Tensor:
    """``[B, H, Nq - dense_rows, K]`` key positions -> bool ``[B, H, Nq, num_keys]`` connectivity
    (the first ``dense_rows`` rows all True), as the official code scatters its top-k."""
    B, H, n, _ = indices.shape
    mask = torch.zeros(B, H, n, num_keys, dtype=torch.bool, device=indices.device)
    mask.scatter_(-1, indices.long(), True)
    if dense_rows:
        mask = torch.cat([mask.new_ones(B, H, dense_rows, num_keys), mask], dim=2)
    return mask


def _largest_row_count(mask: torch.Tensor) -> int:
    """Most keys any row of a bool ``[..., Nq, Nk]`` connectivity keeps (0 when it has no rows, e.g. batch 0)."""
    return int(mask.sum(-1).max()) if mask.numel() else 0


def mask_to_indices(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """bool ``[..., Nq, Nk]`` -> ``(indices [..., Nq, K], valid [..., Nq, K])`` with ``K`` the largest
    row count; rows that keep fewer keys are padded with key 0 and ``valid=False``."""
    K = max(_largest_row_count(mask), 1)
    # a stable sort puts each row's kept keys first, in key order
    indices = torch.sort(mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :K]
    valid = torch.gather(mask, -1, indices)
    return indices.masked_fill(~valid, 0), valid


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------

def _topk_reference(q, k, v, mask, scale, dropout_p):
    """Dense masked attention (the official Sparsifiner ``Attention.forward``)."""
    compute = torch.promote_types(q.dtype, torch.float32)
    logits = (q.to(compute) @ k.to(compute).transpose(-1, -2)) * scale
    attn = logits.masked_fill(~mask, float('-inf')).softmax(-1)
    attn = attn.masked_fill(~mask.any(-1, keepdim=True), 0)  # rows without keys: 0 (NaN elsewhere stays)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return (attn @ v.to(compute)).to(q.dtype)


def _topk_gather(q, k, v, indices, valid, scale, dropout_p):
    """Attention of each query over its ``K`` selected keys: ``[B, H, Nq, D]`` -> ``[B, H, Nq, Dv]``.

    ``attn @ v`` is an ``embedding_bag`` (sum of the selected value rows weighted by the attention),
    which reads only the ``K`` selected rows per query and never materialises them."""
    B, H, Nq, _ = q.shape
    Nk, Dv, K = v.shape[2], v.shape[-1], indices.shape[-1]
    # Logits: one GEMM over all keys, then a gather of the K selected logits. A per-query gather of
    # K key rows (index_select + batched matvec) measured 4-10x slower than the whole GEMM at 197
    # tokens on CPU, and the CSR sampled matmul (torch.sparse.sampled_addmm) was no faster at keep
    # 0.25 and has no autograd for batched CSR; the softmax and attn @ v scale with K.
    logits = torch.matmul(q, k.transpose(-1, -2)).gather(-1, indices) * scale
    if valid is not None:
        logits = logits.masked_fill(~valid, float('-inf'))
    attn = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)
    if valid is not None:
        attn = attn.masked_fill(~valid.any(-1, keepdim=True), 0)  # rows without keys: 0 (NaN elsewhere stays)
    attn = attn.to(v.dtype)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    offset = torch.arange(B * H, device=v.device).view(B, H, 1, 1) * Nk
    flat = (indices + offset).reshape(B * H * Nq, K)
    values, weights = v.reshape(B * H * Nk, Dv), attn.reshape(B * H * Nq, K)
    if v.is_cuda and v.dtype in (torch.float16, torch.bfloat16):
        # CUDA has no half-precision backward for the per-sample weights: sum in fp32 (also more exact)
        values, weights = values.float(), weights.float()
    out = F.embedding_bag(flat, values, per_sample_weights=weights, mode='sum')
    return out.to(v.dtype).view(B, H, Nq, Dv)


def _topk_masked_sdpa(q, k, v, indices, mask, dense_rows, scale, dropout_p):
    """The connectivity as a boolean mask of one fused SDPA call (CUDA ``auto``): dense work, but at ViT token
    counts (197) the fused kernel beats every gather on a GPU, whose index tensor alone is as large as q, k, v.
    Only for connectivities where every row keeps a key (else the gather path's zero rows are needed)."""
    if mask is None:
        mask = indices_to_mask(indices, k.shape[2], dense_rows)
    elif dense_rows:
        mask = mask.clone()
        mask[:, :, :dense_rows] = True
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def _topk_torch(q, k, v, indices, mask, dense_rows, scale, dropout_p):
    parts = []
    if dense_rows:
        parts.append(F.scaled_dot_product_attention(q[:, :, :dense_rows], k, v, dropout_p=dropout_p, scale=scale))
    if dense_rows < q.shape[2]:
        valid = None
        if mask is not None:
            indices, valid = mask_to_indices(mask[:, :, dense_rows:])
            if bool(valid.all()):
                valid = None
        parts.append(_topk_gather(q[:, :, dense_rows:], k, v, indices, valid, scale, dropout_p))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: Optional[torch.Tensor] = None,
                   mask: Optional[torch.Tensor] = None, dense_rows: int = 0, scale: Optional[float] = None,
                   dropout_p: float = 0.0, check_indices: bool = True) -> torch.Tensor:
    """Softmax attention of each query over only its selected keys.

    Args:
        q: ``[B, heads, Nq, head_dim]``; k: ``[B, heads, Nk, head_dim]``; v: ``[B, heads, Nk, head_dim_v]``.
        indices: ``[B, heads, Nq - dense_rows, K]`` int64/int32 key positions per query (distinct per
            row; B or heads may be 1 to broadcast). Exclusive with ``mask``.
        mask: bool ``[B, heads, Nq, Nk]`` connectivity (B or heads may be 1). Exclusive with ``indices``.
        dense_rows: the first ``dense_rows`` query rows attend to all keys (Sparsifiner: 1, the class token).
        scale: logit scale, default ``head_dim ** -0.5``.
        dropout_p: attention dropout (only meaningful in training).
        check_indices: check that every index lies in ``[0, Nk)`` and that no row repeats one (one device sync
            per call; skipped under ``torch.compile``). Callers whose indices come from ``topk`` over ``Nk`` keys
            pass False; unchecked repeated indices give undefined results.

    Returns:
        ``[B, heads, Nq, head_dim_v]``.

    MACs counted (``count_attention_macs``): ``B*heads*(dense_rows*Nk + (Nq-dense_rows)*K)*(Dqk+Dv)``,
    with ``K`` the largest per-row count for a ``mask``.
    """
    op = 'topk_attention'
    if not isinstance(check_indices, bool):
        raise TypeError(f'{op}: check_indices must be a bool, got {check_indices!r}')
    _check_qkv(q, k, v, op)
    indices, mask = _check_connectivity(q, k, indices, mask, dense_rows, op, check_indices)
    check_scale(op, 'scale', scale)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    check_dropout(op, dropout_p)
    B, H, Nq, D = q.shape
    Nk, Dv = k.shape[2], v.shape[-1]
    if mask is not None:
        K = max(_largest_row_count(mask[:, :, dense_rows:]), 1) if dense_rows < Nq else 0
    else:
        K = indices.shape[-1]
    backend = check_simple_backend(op, 'there is no fused kernel for unstructured top-k connectivity')
    add_attention_macs(B * H * (dense_rows * Nk + (Nq - dense_rows) * K) * (D + Dv))
    bad = nonfinite_keys(k, v)  # [B, H, Nk] or None (``_nonfinite``: every backend gives the same result)
    if bad is not None:
        k, v = zero_keys(k, bad), zero_keys(v, bad)
    out = _run_backend(backend, q, k, v, indices, mask, dense_rows, scale, dropout_p)
    return out if bad is None else poison(out, _rows_attending(bad, indices, mask, dense_rows))


def _run_backend(backend, q, k, v, indices, mask, dense_rows, scale, dropout_p):
    if backend == 'reference':
        if mask is None:
            mask = indices_to_mask(indices, k.shape[2], dense_rows)
        elif dense_rows:
            mask = mask.clone()
            mask[:, :, :dense_rows] = True
        return _topk_reference(q, k, v, mask, scale, dropout_p)
    if backend == 'auto' and q.is_cuda and not exporting() and (mask is None or bool(mask[:, :, dense_rows:].any(-1).all())):
        return _topk_masked_sdpa(q, k, v, indices, mask, dense_rows, scale, dropout_p)
    return _topk_torch(q, k, v, indices, mask, dense_rows, scale, dropout_p)


def _rows_attending(keys: torch.Tensor, indices, mask, dense_rows: int) -> torch.Tensor:
    """bool ``[B, H, Nk]`` keys -> bool ``[B, H, Nq]``: the query rows that attend to one of them."""
    dense = keys.any(-1, keepdim=True).expand(-1, -1, dense_rows)
    if indices is not None:
        sparse = keys[:, :, None, :].expand(-1, -1, indices.shape[2], -1).gather(-1, indices).any(-1)
    else:
        sparse = (mask[:, :, dense_rows:] & keys[:, :, None, :]).any(-1)
    return torch.cat([dense, sparse], dim=2)


def topk_attention_macs(batch: int, heads: int, num_queries: int, num_keys: int, keep: int, head_dim: int,
                        head_dim_v: Optional[int] = None, dense_rows: int = 0) -> int:
    """Nominal MACs of one ``topk_attention`` call (``q @ k^T`` and ``attn @ v`` over the kept pairs)."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    return batch * heads * (dense_rows * num_keys + (num_queries - dense_rows) * keep) * (head_dim + head_dim_v)


def keep_budget(keep_rate: float, num_tokens: int) -> int:
    """Keys kept per query at ``keep_rate``: ``ceil(keep_rate * num_tokens)`` (the official budget)."""
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f'keep_rate must be in (0, 1], got {keep_rate!r}')
    return min(math.ceil(keep_rate * num_tokens), num_tokens)
