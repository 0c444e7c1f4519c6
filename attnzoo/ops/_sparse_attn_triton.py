"""Attention over a bitmask connectivity in Triton (``attnzoo.ops.connectivity_attention``, backend ``triton``):
forward and backward, flash-style.

Layout: ``q, k, v, out`` are ``[B, heads, N, D]`` read through their strides (the ``qkv(x)`` split of a ViT
needs no copy); the connectivity is the int32 bitmask ``[B, heads, N - dense_rows, ceil(Nk / 32)]`` of
``topk_connectivity`` (bit ``j`` of word ``w``: key ``32 w + j``); the first ``dense_rows`` query rows attend
to every key. Key blocks are 32 keys, one bitmask word per query row: a program of ``BM`` query rows loads
the words of a key block, skips the block when none is set, and otherwise masks the logits with the bits
(online softmax in fp32, log2 domain). The dK/dV kernel owns one 32-key block and walks the query blocks,
skipping those with no bit set in its word. ``DELTA = rowsum(out * dO)`` is computed by the caller.

With ``TRITON_INTERPRET=1`` (set before this module is imported) Triton's interpreter runs the kernels on
CPU tensors, which is how the CPU test suite checks them.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
BLOCK_K = 32  # keys per block: one bitmask word
BLOCK_Q = 64  # query rows per program (forward, dQ) and per step (dK/dV)


@triton.jit
def _words(BITS, sb_b, sb_h, sb_n, b, h, rows, row_ok, dense_rows, kb):
    """``[BM]`` bitmask words of key block ``kb`` for query ``rows`` (all bits for the dense rows)."""
    sparse = row_ok & (rows >= dense_rows)
    word = tl.load(BITS + b * sb_b + h * sb_h + (rows - dense_rows) * sb_n + kb, mask=sparse, other=0)
    return tl.where(row_ok & (rows < dense_rows), -1, word)


@triton.jit
def _kept(word, keys, Nk):
    """``[BM, BK]`` bool: whether each row's ``word`` keeps each of the block's ``keys``."""
    bit = (word[:, None] >> (keys % 32)[None, :]) & 1
    return (bit != 0) & (keys < Nk)[None, :]


@triton.jit
def _tile(ptr, b, h, s_b, s_h, s_n, idx, ok, D: tl.constexpr):
    """``[len(idx), D]`` vectors of tokens ``idx`` of (batch ``b``, head ``h``), 0 where not ``ok``."""
    return tl.load(ptr + b * s_b + h * s_h + idx[:, None] * s_n + tl.arange(0, D)[None, :], mask=ok[:, None],
                   other=0.)


@triton.jit
def _fwd_kernel(Q, K, V, BITS, O, LSE, sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
                so_b, so_h, so_n, sb_b, sb_h, sb_n, heads, N, Nk, dense_rows, qk_scale,
                D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """Output and log2-sum-exp (``LSE`` ``[B, heads, N]`` contiguous) of ``BM`` query rows; rows keeping no key
    output 0."""
    bh = tl.program_id(0)
    b, h = bh // heads, bh % heads
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    row_ok = rows < N
    q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, row_ok, D)
    m_i = tl.full([BM], -1.0e30, tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for kb in range(0, tl.cdiv(Nk, BK)):
        word = _words(BITS, sb_b, sb_h, sb_n, b, h, rows, row_ok, dense_rows, kb)
        if tl.max((word != 0).to(tl.int32), 0) > 0:
            keys = kb * BK + tl.arange(0, BK)
            kept = _kept(word, keys, Nk)
            k = _tile(K, b, h, sk_b, sk_h, sk_n, keys, keys < Nk, D)
            s = tl.where(kept, tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale, -1.0e30)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.where(kept, tl.exp2(s - m_new[:, None]), 0.)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _tile(V, b, h, sv_b, sv_h, sv_n, keys, keys < Nk, D)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.)
    d = tl.arange(0, D)
    out = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + d[None, :], out, mask=row_ok[:, None])
    tl.store(LSE + bh * N + rows, m_i + tl.log2(l_safe), mask=row_ok)


@triton.jit
def _bwd_dq_kernel(Q, K, V, BITS, DO, LSE, DELTA, DQ, sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
                   sd_b, sd_h, sd_n, sb_b, sb_h, sb_n, heads, N, Nk, dense_rows, qk_scale, scale,
                   D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """dQ of ``BM`` query rows (``DQ`` contiguous)."""
    bh = tl.program_id(0)
    b, h = bh // heads, bh % heads
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    row_ok = rows < N
    q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, row_ok, D)
    do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, row_ok, D)
    lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
    delta = tl.load(DELTA + bh * N + rows, mask=row_ok, other=0.)
    dq = tl.zeros([BM, D], tl.float32)
    for kb in range(0, tl.cdiv(Nk, BK)):
        word = _words(BITS, sb_b, sb_h, sb_n, b, h, rows, row_ok, dense_rows, kb)
        if tl.max((word != 0).to(tl.int32), 0) > 0:
            keys = kb * BK + tl.arange(0, BK)
            kept = _kept(word, keys, Nk)
            k = _tile(K, b, h, sk_b, sk_h, sk_n, keys, keys < Nk, D)
            v = _tile(V, b, h, sv_b, sv_h, sv_n, keys, keys < Nk, D)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            p = tl.exp2(tl.where(kept, s - lse[:, None], -float('inf')))
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    d = tl.arange(0, D)
    tl.store(DQ + bh * N * D + rows[:, None] * D + d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, BITS, DO, LSE, DELTA, DK, DV, sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
                     sd_b, sd_h, sd_n, sb_b, sb_h, sb_n, heads, N, Nk, dense_rows, qk_scale, scale,
                     D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """dK, dV of one ``BK``-key block (``DK``, ``DV`` contiguous): walks the query blocks that keep a key of it."""
    bh = tl.program_id(0)
    b, h = bh // heads, bh % heads
    kb = tl.program_id(1)
    keys = kb * BK + tl.arange(0, BK)
    key_ok = keys < Nk
    k = _tile(K, b, h, sk_b, sk_h, sk_n, keys, key_ok, D)
    v = _tile(V, b, h, sv_b, sv_h, sv_n, keys, key_ok, D)
    dk = tl.zeros([BK, D], tl.float32)
    dv = tl.zeros([BK, D], tl.float32)
    for qb in range(0, tl.cdiv(N, BM)):
        rows = qb * BM + tl.arange(0, BM)
        row_ok = rows < N
        word = _words(BITS, sb_b, sb_h, sb_n, b, h, rows, row_ok, dense_rows, kb)
        if tl.max((word != 0).to(tl.int32), 0) > 0:
            kept = _kept(word, keys, Nk)  # [queries, keys]
            q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, row_ok, D)
            do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, row_ok, D)
            lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
            delta = tl.load(DELTA + bh * N + rows, mask=row_ok, other=0.)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            p = tl.exp2(tl.where(kept, s - lse[:, None], -float('inf')))
            dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    d = tl.arange(0, D)
    offset = bh * Nk * D + keys[:, None] * D + d[None, :]
    tl.store(DK + offset, (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + offset, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

def _precision(q: torch.Tensor) -> str:
    """fp32 inputs keep fp32 products (``ieee``), matching the other backends; half inputs use the tensor cores."""
    return 'ieee' if q.dtype == torch.float32 else 'tf32'


def _contiguous_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _head_strides(x: torch.Tensor) -> Tuple[int, int, int]:
    """(batch, head, token) strides of ``[B, heads, N, D]`` (last dim contiguous)."""
    return x.stride(0), x.stride(1), x.stride(2)


def forward(q, k, v, bits, dense_rows: int, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[B, heads, N, D]`` q, k, v and the bitmask -> (out ``[B, heads, N, D]``, log2-sum-exp ``[B, heads, N]``
    fp32)."""
    q, k, v, bits = (_contiguous_last(t) for t in (q, k, v, bits))
    B, H, N, D = q.shape
    Nk = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    _fwd_kernel[(B * H, triton.cdiv(N, BLOCK_Q))](
        q, k, v, bits, out, lse, *_head_strides(q), *_head_strides(k), *_head_strides(v), *_head_strides(out),
        *_head_strides(bits), H, N, Nk, dense_rows, scale * LOG2E, D=D, BM=BLOCK_Q, BK=BLOCK_K,
        PRECISION=_precision(q), num_warps=4, num_stages=2)
    return out, lse


def backward(grad_out, q, k, v, bits, out, lse, dense_rows: int, scale: float):
    """Gradients of :func:`forward`: ``(dq, dk, dv)``, contiguous."""
    q, k, v, bits, grad_out = (_contiguous_last(t) for t in (q, k, v, bits, grad_out))
    B, H, N, D = q.shape
    Nk = k.shape[2]
    delta = (out.float() * grad_out.float()).sum(-1).contiguous()  # [B, heads, N]
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    args = (*_head_strides(q), *_head_strides(k), *_head_strides(v), *_head_strides(grad_out), *_head_strides(bits),
            H, N, Nk, dense_rows, scale * LOG2E, scale)
    common = dict(D=D, BM=BLOCK_Q, BK=BLOCK_K, PRECISION=_precision(q), num_warps=4, num_stages=2)
    _bwd_dq_kernel[(B * H, triton.cdiv(N, BLOCK_Q))](q, k, v, bits, grad_out, lse, delta, dq, *args, **common)
    _bwd_dkdv_kernel[(B * H, triton.cdiv(Nk, BLOCK_K))](q, k, v, bits, grad_out, lse, delta, dk, dv, *args,
                                                        **common)
    return dq, dk, dv
