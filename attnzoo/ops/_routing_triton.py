"""Fused bi-level routing attention (BiFormer's token attention) in Triton: forward and backward.

Layout: ``q, k`` ``[B, H, W, heads, Dk]``, ``v, out`` ``[B, H, W, heads, Dv]``, read and written through their
strides (the ``qkv(x).unbind`` views of a BiFormer layer need no copy); the map is ``Sh x Sw`` regions of
``rh x rw`` tokens, ``T = rh * rw``, regions row-major, tokens row-major inside a region, so token ``t`` of region
``r`` sits at row ``(r // Sw) * rh + t // rw``, column ``(r % Sw) * rw + t % rw``. The routing ``idx`` is
``[B, R, topk]`` (key regions of every query region, shared by the heads).

* Forward and dQ: a program owns up to ``rows`` tokens of one query region and one head and walks the region's
  ``topk`` routed key regions straight from ``idx`` with an online softmax (fp32 accumulators); a key block holds
  ``cols`` tokens: ``cols / per`` routed regions of ``per`` tokens each (small regions: several routed regions per
  block; regions larger than a block: chunks of one). Nothing is gathered and no mask is built.
* dK/dV: a program owns up to ``rows`` tokens of one key region and walks the query regions that routed to it
  (the reverse routing: the routing entries sorted by key region, and each key region's first entry, built once
  per backward call by a sort and a ``searchsorted``; no atomics), ``cols / per`` of them per block.
* The dQ kernel also writes ``delta = rowsum(out * dout)`` (fp32) that the dK/dV kernel reads.

Head dims up to 128 (any; padded to a power of two >= 16 in-kernel with masks), any region size, any ``topk``;
fp16, bf16 and fp32 (fp32 products stay fp32). The kernels run on CUDA; with ``TRITON_INTERPRET=1`` (set before
this module is imported) Triton's interpreter runs them on CPU tensors, which is how the CPU test suite checks them.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634

# Block limits of ``block_shape``: at most 64 tokens of a region per program, 64 routed tokens per step of the walk
# (not yet tuned on a GPU; the launchers take others through ``tiles``).
TILES = (64, 64)


@triton.jit
def _token_offsets(region, token, sw, rh, rw, s_y, s_x):
    """Element offsets (row, column strides ``s_y, s_x``) of token ``token`` of region ``region``."""
    y = (region // sw) * rh + token // rw
    x = (region % sw) * rw + token % rw
    return y * s_y + x * s_x


@triton.jit
def _load_rows(ptr, b, h, s_b, s_h, offsets, valid, D: tl.constexpr, DP: tl.constexpr):
    """``[N, DP]`` head-``h`` vectors of image ``b`` at token ``offsets`` (zero where not ``valid`` or ``d >= D``)."""
    d = tl.arange(0, DP)
    ptrs = ptr + b.to(tl.int64) * s_b + h * s_h + offsets[:, None] + d[None, :]
    return tl.load(ptrs, mask=valid[:, None] & (d[None, :] < D), other=0.)


@triton.jit
def _store_rows(ptr, value, b, h, s_b, s_h, offsets, valid, D: tl.constexpr, DP: tl.constexpr):
    d = tl.arange(0, DP)
    ptrs = ptr + b.to(tl.int64) * s_b + h * s_h + offsets[:, None] + d[None, :]
    tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=valid[:, None] & (d[None, :] < D))


@triton.jit
def _program(heads, chunks, T, ROWS: tl.constexpr):
    """This program's image, head, region and its ``ROWS`` tokens (chunk of the region), with their mask. Grid axis
    0 runs over (region, chunk): neighbouring programs read the same image and head (and its routed regions)."""
    bh = tl.program_id(1)
    region = tl.program_id(0) // chunks
    token = (tl.program_id(0) % chunks) * ROWS + tl.arange(0, ROWS)
    return bh // heads, bh % heads, region, token, token < T


@triton.jit
def _routed_block(IDX, route, slot0, n0, topk, T, COLS: tl.constexpr, PER: tl.constexpr):
    """Key region and token of each of the ``COLS`` columns of a key block: ``COLS // PER`` routing slots from
    ``slot0`` (routing row ``route``), tokens ``n0 .. n0 + PER - 1`` of each; and the mask of real ones."""
    n = tl.arange(0, COLS)
    slot = slot0 + n // PER
    token = n0 + n % PER
    in_route = slot < topk
    region = tl.load(IDX + route * topk + slot, mask=in_route, other=0)
    return region, token, in_route & (token < T)


@triton.jit
def _routing_fwd_kernel(Q, K, V, IDX, O, LSE,
                        sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                        so_b, so_y, so_x, so_h, sl_b, sl_y, sl_x, sl_h,
                        heads, R, sw, rh, rw, T, topk, chunks, qk_scale,
                        DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, DVP: tl.constexpr,
                        ROWS: tl.constexpr, COLS: tl.constexpr, PER: tl.constexpr, PRECISION: tl.constexpr):
    """Output and log2-sum-exp (``LSE`` strides ``sl_*``) of ``ROWS`` tokens of one query region."""
    b, h, region, token, q_valid = _program(heads, chunks, T, ROWS)
    q_at = _token_offsets(region, token, sw, rh, rw, sq_y, sq_x)
    q = _load_rows(Q, b, h, sq_b, sq_h, q_at, q_valid, DK, DKP)
    route = b * R + region
    m_i = tl.full([ROWS], -float('inf'), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, DVP], tl.float32)
    for slot0 in range(0, topk, COLS // PER):
        for n0 in range(0, T, PER):
            k_region, k_token, k_valid = _routed_block(IDX, route, slot0, n0, topk, T, COLS, PER)
            k = _load_rows(K, b, h, sk_b, sk_h, _token_offsets(k_region, k_token, sw, rh, rw, sk_y, sk_x),
                           k_valid, DK, DKP)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            s = tl.where(k_valid[None, :], s, -1.0e30)  # finite: padded query rows must not produce NaN
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _load_rows(V, b, h, sv_b, sv_h, _token_offsets(k_region, k_token, sw, rh, rw, sv_y, sv_x),
                           k_valid, DV, DVP)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
    _store_rows(O, acc / l_i[:, None], b, h, so_b, so_h, _token_offsets(region, token, sw, rh, rw, so_y, so_x),
                q_valid, DV, DVP)
    tl.store(LSE + b * sl_b + h * sl_h + _token_offsets(region, token, sw, rh, rw, sl_y, sl_x),
             m_i + tl.log2(l_i), mask=q_valid)


@triton.jit
def _routing_bwd_dq_kernel(Q, K, V, IDX, O, DO, LSE, DELTA, DQ,
                           sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                           so_b, so_y, so_x, so_h, sd_b, sd_y, sd_x, sd_h, sl_b, sl_y, sl_x, sl_h,
                           sg_b, sg_y, sg_x, sg_h,
                           heads, R, sw, rh, rw, T, topk, chunks, qk_scale, scale,
                           DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, DVP: tl.constexpr,
                           ROWS: tl.constexpr, COLS: tl.constexpr, PER: tl.constexpr, PRECISION: tl.constexpr):
    """dQ (strides ``sg_*``) of ``ROWS`` tokens of one query region, in the forward's walk, and
    ``DELTA = rowsum(O * dO)`` (fp32, strides of ``LSE``) for the dK/dV kernel that runs next."""
    b, h, region, token, q_valid = _program(heads, chunks, T, ROWS)
    q = _load_rows(Q, b, h, sq_b, sq_h, _token_offsets(region, token, sw, rh, rw, sq_y, sq_x), q_valid, DK, DKP)
    do = _load_rows(DO, b, h, sd_b, sd_h, _token_offsets(region, token, sw, rh, rw, sd_y, sd_x), q_valid, DV, DVP)
    o = _load_rows(O, b, h, so_b, so_h, _token_offsets(region, token, sw, rh, rw, so_y, so_x), q_valid, DV, DVP)
    l_at = b * sl_b + h * sl_h + _token_offsets(region, token, sw, rh, rw, sl_y, sl_x)
    lse = tl.load(LSE + l_at, mask=q_valid, other=0.)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + l_at, delta, mask=q_valid)
    route = b * R + region
    dq = tl.zeros([ROWS, DKP], tl.float32)
    for slot0 in range(0, topk, COLS // PER):
        for n0 in range(0, T, PER):
            k_region, k_token, k_valid = _routed_block(IDX, route, slot0, n0, topk, T, COLS, PER)
            k = _load_rows(K, b, h, sk_b, sk_h, _token_offsets(k_region, k_token, sw, rh, rw, sk_y, sk_x),
                           k_valid, DK, DKP)
            v = _load_rows(V, b, h, sv_b, sv_h, _token_offsets(k_region, k_token, sw, rh, rw, sv_y, sv_x),
                           k_valid, DV, DVP)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            p = tl.where(k_valid[None, :] & q_valid[:, None], tl.exp2(s - lse[:, None]), 0.)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    _store_rows(DQ, dq * scale, b, h, sg_b, sg_h, _token_offsets(region, token, sw, rh, rw, sg_y, sg_x), q_valid,
                DK, DKP)


@triton.jit
def _routing_bwd_dkdv_kernel(Q, K, V, ORDER, FIRST, DO, LSE, DELTA, GRAD_K, GRAD_V,
                             sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                             sd_b, sd_y, sd_x, sd_h, sl_b, sl_y, sl_x, sl_h,
                             sdk_b, sdk_y, sdk_x, sdk_h, sdv_b, sdv_y, sdv_x, sdv_h,
                             heads, R, sw, rh, rw, T, topk, chunks, qk_scale, scale,
                             DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, DVP: tl.constexpr,
                             ROWS: tl.constexpr, COLS: tl.constexpr, PER: tl.constexpr, PRECISION: tl.constexpr):
    """dK, dV of ``ROWS`` tokens of one key region: walks the routing entries ``ORDER[FIRST[g] : FIRST[g + 1]]``
    (flat indices into ``idx``, sorted by key region ``g = b * R + region``) of the query regions that routed to
    it, ``COLS // PER`` of them per block."""
    b, h, region, token, k_valid = _program(heads, chunks, T, ROWS)
    k = _load_rows(K, b, h, sk_b, sk_h, _token_offsets(region, token, sw, rh, rw, sk_y, sk_x), k_valid, DK, DKP)
    v = _load_rows(V, b, h, sv_b, sv_h, _token_offsets(region, token, sw, rh, rw, sv_y, sv_x), k_valid, DV, DVP)
    first = tl.load(FIRST + b * R + region)
    last = tl.load(FIRST + b * R + region + 1)
    dk = tl.zeros([ROWS, DKP], tl.float32)
    dv = tl.zeros([ROWS, DVP], tl.float32)
    n = tl.arange(0, COLS)
    for e0 in range(first, last, COLS // PER):
        entry = e0 + n // PER
        in_list = entry < last
        q_region = (tl.load(ORDER + entry, mask=in_list, other=0) // topk) % R
        for n0 in range(0, T, PER):
            q_token = n0 + n % PER
            q_valid = in_list & (q_token < T)
            q = _load_rows(Q, b, h, sq_b, sq_h, _token_offsets(q_region, q_token, sw, rh, rw, sq_y, sq_x),
                           q_valid, DK, DKP)
            do = _load_rows(DO, b, h, sd_b, sd_h, _token_offsets(q_region, q_token, sw, rh, rw, sd_y, sd_x),
                            q_valid, DV, DVP)
            l_at = b * sl_b + h * sl_h + _token_offsets(q_region, q_token, sw, rh, rw, sl_y, sl_x)
            lse = tl.load(LSE + l_at, mask=q_valid, other=0.)
            delta = tl.load(DELTA + l_at, mask=q_valid, other=0.)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [queries, keys]
            p = tl.where(q_valid[:, None] & k_valid[None, :], tl.exp2(s - lse[:, None]), 0.)
            dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    _store_rows(GRAD_K, dk * scale, b, h, sdk_b, sdk_h, _token_offsets(region, token, sw, rh, rw, sdk_y, sdk_x),
                k_valid, DK, DKP)
    _store_rows(GRAD_V, dv, b, h, sdv_b, sdv_h, _token_offsets(region, token, sw, rh, rw, sdv_y, sdv_x), k_valid,
                DV, DVP)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

def _strides(x: torch.Tensor) -> Tuple[int, ...]:
    """(batch, row, column, head) strides of ``[B, H, W, heads, D]`` (last dim contiguous) or ``[B, H, W, heads]``."""
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def _contiguous_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _precision(q: torch.Tensor) -> str:
    """fp32 inputs keep fp32 products (``ieee``), matching the other backends; half inputs use the tensor cores."""
    return 'ieee' if q.dtype == torch.float32 else 'tf32'


def _padded(n: int) -> int:
    """A block extent for ``n``: the next power of two, at least 16 (``tl.dot``'s minimum)."""
    return max(16, triton.next_power_of_2(n))


def block_shape(tokens: int, topk: int, tiles: Tuple[int, int] = TILES) -> Tuple[int, int, int]:
    """``(rows, cols, per)`` for regions of ``tokens`` tokens: a program owns ``rows`` tokens of one region; a block
    of the walk holds ``cols`` tokens, ``cols // per`` regions of ``per`` tokens (all of a region's tokens when they
    fit, else chunks of ``cols``)."""
    max_rows, max_cols = tiles
    per_region = triton.next_power_of_2(tokens)
    cols = min(max_cols, _padded(per_region * triton.next_power_of_2(topk)))
    return min(max_rows, _padded(tokens)), cols, min(per_region, cols)


def _meta(q: torch.Tensor, v: torch.Tensor, regions: int, tokens: int, topk: int, tiles):
    rows, cols, per = block_shape(tokens, topk, tiles)
    chunks = triton.cdiv(tokens, rows)
    grid = (regions * chunks, q.shape[0] * q.shape[3])
    meta = dict(DKP=_padded(q.shape[-1]), DVP=_padded(v.shape[-1]), ROWS=rows, COLS=cols, PER=per,
                PRECISION=_precision(q), num_warps=4, num_stages=2)
    return grid, chunks, meta


def _geometry(q: torch.Tensor, sh: int, sw: int):
    """``(R, sw, rh, rw, T)`` of the region grid."""
    rh, rw = q.shape[1] // sh, q.shape[2] // sw
    return sh * sw, sw, rh, rw, rh * rw


def routing_forward(q, k, v, idx, sh: int, sw: int, scale: float, tiles=TILES):
    """``q, k [B, H, W, heads, Dk]``, ``v [B, H, W, heads, Dv]``, routing ``idx [B, R, topk]`` (int64) ->
    (out ``[B, H, W, heads, Dv]``, log2-sum-exp ``[B, H, W, heads]`` fp32). ``tiles``: (max rows, max cols) of
    :func:`block_shape`, powers of two >= 16."""
    q, k, v = (_contiguous_last(t) for t in (q, k, v))
    idx = idx.contiguous()
    B, H, W, heads, _ = q.shape
    R, sw, rh, rw, T = _geometry(q, sh, sw)
    topk = idx.shape[-1]
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    lse = torch.empty((B, H, W, heads), dtype=torch.float32, device=q.device)
    grid, chunks, meta = _meta(q, v, R, T, topk, tiles)
    _routing_fwd_kernel[grid](
        q, k, v, idx, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out), *_strides(lse),
        heads, R, sw, rh, rw, T, topk, chunks, scale * LOG2E, DK=q.shape[-1], DV=v.shape[-1], **meta)
    return out, lse


def reverse_routing(idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The query regions that routed to each key region, from ``idx [B, R, topk]``: ``order [B*R*topk]``, the flat
    indices of ``idx`` sorted by global key region ``b * R + idx`` (the query region of entry ``e`` is
    ``(e // topk) % R``), and ``first [B*R + 1]``, where each key region's entries start in ``order``."""
    B, R, _ = idx.shape
    keys = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * R).flatten()
    sorted_keys, order = torch.sort(keys, stable=True)
    first = torch.searchsorted(sorted_keys, torch.arange(B * R + 1, device=idx.device))
    return order, first


def routing_backward(grad_out, q, k, v, out, lse, idx, sh: int, sw: int, scale: float, tiles=TILES):
    """Gradients ``(dq, dk, dv)`` of :func:`routing_forward` (contiguous, dtypes of q, k, v)."""
    q, k, v, out, grad_out = (_contiguous_last(t) for t in (q, k, v, out, grad_out))
    idx = idx.contiguous()
    heads = q.shape[3]
    R, sw, rh, rw, T = _geometry(q, sh, sw)
    topk = idx.shape[-1]
    delta = torch.empty_like(lse)  # [B, H, W, heads], written by the dQ kernel, read by the dK/dV kernel
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    order, first = reverse_routing(idx)
    grid, chunks, meta = _meta(q, v, R, T, topk, tiles)
    sizes = (heads, R, sw, rh, rw, T, topk, chunks, scale * LOG2E, scale)
    _routing_bwd_dq_kernel[grid](
        q, k, v, idx, out, grad_out, lse, delta, dq, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        *_strides(grad_out), *_strides(lse), *_strides(dq), *sizes, DK=q.shape[-1], DV=v.shape[-1], **meta)
    _routing_bwd_dkdv_kernel[grid](
        q, k, v, order, first, grad_out, lse, delta, dk, dv, *_strides(q), *_strides(k), *_strides(v),
        *_strides(grad_out), *_strides(lse), *_strides(dk), *_strides(dv), *sizes, DK=q.shape[-1],
        DV=v.shape[-1], **meta)
    return dq, dk, dv
