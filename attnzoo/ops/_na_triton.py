"""Fused 2-D neighborhood attention in Triton: forward and backward, dilation and a trainable relative
positional bias (RPB) inside the kernels.

Layout: ``q, k, v, out`` are ``[B, H, W, heads, D]`` read and written through their strides (the
``qkv(x).unbind`` views of a NAT layer need no copy). Each program of the forward / dQ kernels owns a
``BH x BW`` tile of queries of one dilation group (group coordinates: image row ``y = gy + dil_h * i``)
and walks only the key rows and columns that tile's windows cover, ``KR`` rows x ``KC`` columns per
step, with an online softmax. The dK/dV kernel owns a tile of keys and walks the queries whose windows
can contain them. The bias gradient is written per (query, window slot) by the dQ kernel and reduced
over batch and positions by one ``index_add`` (no atomics on the few hundred table entries).

Non-finite keys follow ``_nonfinite``'s rule in the forward kernel itself, at the cost of a few vector ops per
key block (no extra load, no pass over k and v, no host sync): the value rows of keys whose k or v is not finite
are zeroed as they are loaded, and the queries whose window holds such a key get NaN. The backward kernels are
plain: a non-finite input spreads NaN through the gradients of its tiles.

Window of group position ``i`` on an axis of group length ``L`` with kernel ``K`` (odd):
``start(i) = clamp(i - K // 2, 0, L - K)``, keys ``start(i) .. start(i) + K - 1``; RPB index
``key - i + K - 1`` per axis (NATTEN / NAT semantics, non-causal).

The kernels run on CUDA; with ``TRITON_INTERPRET=1`` (set before this module is imported) Triton's
interpreter runs them on CPU tensors, which is how the CPU test suite checks them.
"""
import functools
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634

# Tile shapes (BH, BW, KR, KC): 8x8 queries per program, 4 key rows x 8 key columns per step over the 14x14
# keys a k=7 window needs; dK/dV: 8x8 keys per program, 4 query rows x 8 columns per step. Chosen on the H200
# by ``backend_choices.py triton_tiles`` (8 shapes at the 7 DiNAT-T stage/dilation shapes, bf16, fwd+bwd with
# the RPB gradient): the fastest or within 10 % of it at each, 15 % less time in all than (8, 8, 2, 16), most at
# the dilated layers (narrower key blocks waste fewer masked columns of a dilation group).
TILES = (8, 8, 4, 8)


@triton.jit
def _start(i, length, K: tl.constexpr):
    """First key of the window of (group) position ``i`` on an axis of ``length`` tokens."""
    return tl.minimum(tl.maximum(i - K // 2, 0), length - K)


@triton.jit
def _group(pid, tiles_h, tiles_w, dil_w):
    """Program index -> (dilation group gy, gx; tile ty, tx)."""
    tx = pid % tiles_w
    pid = pid // tiles_w
    ty = pid % tiles_h
    pid = pid // tiles_h
    return pid // dil_w, pid % dil_w, ty, tx


@triton.jit
def _program_tile(heads, H, W, dil_h, dil_w, tiles_h, tiles_w, BH: tl.constexpr, BW: tl.constexpr):
    """This program's batch and head, dilation group ``(gy, gx)``, the group's lengths ``(LH, LW)``, and the
    ``BH*BW`` group positions ``(i, j)`` of its tile, clamped into the group, with the mask of those inside it."""
    bh = tl.program_id(0)
    gy, gx, ty, tx = _group(tl.program_id(1), tiles_h, tiles_w, dil_w)
    LH = (H - gy + dil_h - 1) // dil_h
    LW = (W - gx + dil_w - 1) // dil_w
    m = tl.arange(0, BH * BW)
    i, j = ty * BH + m // BW, tx * BW + m % BW
    inside = (i < LH) & (j < LW)
    return bh // heads, bh % heads, gy, gx, LH, LW, tl.minimum(i, LH - 1), tl.minimum(j, LW - 1), inside


@triton.jit
def _block(r0, c0, r_hi, c_hi, LH, LW, R: tl.constexpr, C: tl.constexpr):
    """An ``R x C`` block of group positions from ``(r0, c0)``, clamped into the group, and the mask of those
    before ``(r_hi, c_hi)``."""
    n = tl.arange(0, R * C)
    r, c = r0 + n // C, c0 + n % C
    valid = (r < r_hi) & (c < c_hi)
    return tl.minimum(r, LH - 1), tl.minimum(c, LW - 1), valid


@triton.jit
def _rows(ptr, b, h, s_b, s_h, y, x, s_y, s_x, D: tl.constexpr):
    """``[N, D]`` pointers to the head-``h`` vectors of the tokens at image positions ``(y, x)`` of image ``b``."""
    return ptr + b * s_b + h * s_h + (y * s_y + x * s_x)[:, None] + tl.arange(0, D)[None, :]


@triton.jit
def _logits(q, k, qi, qj, kr, kc, sr, sc, k_valid, q_valid, rpb_ptr, qk_scale,
            KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, PRECISION: tl.constexpr):
    """``[M, N]`` log2-scaled logits of queries (group coords ``qi, qj``, window starts ``sr, sc``) against keys
    ``kr, kc``, and the mask of pairs inside the window."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    inside = ((kr[None, :] >= sr[:, None]) & (kr[None, :] < sr[:, None] + KH)
              & (kc[None, :] >= sc[:, None]) & (kc[None, :] < sc[:, None] + KW)
              & k_valid[None, :] & q_valid[:, None])
    if HAS_RPB:
        index = (kr[None, :] - qi[:, None] + KH - 1) * (2 * KW - 1) + (kc[None, :] - qj[:, None] + KW - 1)
        s += tl.load(rpb_ptr + index, mask=inside, other=0.) * 1.4426950408889634
    return s, inside


@triton.jit
def _nonfinite_rows(k, v):
    """``[N]`` mask of the keys whose ``k`` or ``v`` row (``[N, D]``) holds a NaN or an infinity."""
    finite = (tl.abs(k.to(tl.float32)) < float('inf')) & (tl.abs(v.to(tl.float32)) < float('inf'))
    return tl.min(finite.to(tl.int32), 1) == 0


@triton.jit
def _na2d_fwd_kernel(Q, K, V, RPB, O, LSE,
                     sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                     so_b, so_y, so_x, so_h, sl_b, sl_y, sl_x, sl_h,
                     heads, H, W, dil_h, dil_w, tiles_h, tiles_w, qk_scale,
                     KH: tl.constexpr, KW: tl.constexpr, D: tl.constexpr, HAS_RPB: tl.constexpr,
                     BH: tl.constexpr, BW: tl.constexpr, KR: tl.constexpr, KC: tl.constexpr,
                     PRECISION: tl.constexpr):
    """Output and log2-sum-exp of one ``BH x BW`` query tile (``O`` strides ``so_*``, ``LSE`` strides ``sl_*``).

    Non-finite keys (``_nonfinite``'s rule): a masked pair still multiplies its value by ``p = 0``, so the value
    rows of keys whose k or v is not finite are zeroed as they are loaded, and the queries with such a key inside
    their window get NaN for output and log2-sum-exp; the other queries of the tile are unaffected."""
    b, h, gy, gx, LH, LW, qi, qj, q_valid = _program_tile(heads, H, W, dil_h, dil_w, tiles_h, tiles_w, BH, BW)
    sr, sc = _start(qi, LH, KH), _start(qj, LW, KW)
    y, x = gy + dil_h * qi, gx + dil_w * qj
    q = tl.load(_rows(Q, b, h, sq_b, sq_h, y, x, sq_y, sq_x, D), mask=q_valid[:, None], other=0.)
    rpb_ptr = RPB + h * (2 * KH - 1) * (2 * KW - 1)
    # Key rows / columns covered by the tile's windows (windows start monotonically with position).
    r_lo, r_hi = tl.min(sr, 0), tl.max(sr, 0) + KH
    c_lo, c_hi = tl.min(sc, 0), tl.max(sc, 0) + KW
    m_i = tl.full([BH * BW], -float('inf'), tl.float32)
    l_i = tl.zeros([BH * BW], tl.float32)
    acc = tl.zeros([BH * BW, D], tl.float32)
    poisoned = tl.zeros([BH * BW], tl.int32)  # > 0: a non-finite key is inside the query's window
    for r0 in range(r_lo, r_hi, KR):
        for c0 in range(c_lo, c_hi, KC):
            kr, kc, k_valid = _block(r0, c0, r_hi, c_hi, LH, LW, KR, KC)
            ky, kx = gy + dil_h * kr, gx + dil_w * kc
            k = tl.load(_rows(K, b, h, sk_b, sk_h, ky, kx, sk_y, sk_x, D))
            v = tl.load(_rows(V, b, h, sv_b, sv_h, ky, kx, sv_y, sv_x, D))
            bad = _nonfinite_rows(k, v)
            v = tl.where(bad[:, None], tl.zeros_like(v), v)
            s, inside = _logits(q, k, qi, qj, kr, kc, sr, sc, k_valid, q_valid, rpb_ptr, qk_scale,
                                KH, KW, HAS_RPB, PRECISION)
            poisoned += tl.sum((inside & bad[None, :]).to(tl.int32), 1)
            s = tl.where(inside, s, -1.0e30)  # finite: a fully masked first block must not produce NaN
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
    acc = tl.where(poisoned[:, None] > 0, float('nan'), acc / l_i[:, None])
    lse = tl.where(poisoned > 0, float('nan'), m_i + tl.log2(l_i))
    tl.store(_rows(O, b, h, so_b, so_h, y, x, so_y, so_x, D), acc.to(O.dtype.element_ty), mask=q_valid[:, None])
    tl.store(LSE + b * sl_b + h * sl_h + y * sl_y + x * sl_x, lse, mask=q_valid)


@triton.jit
def _na2d_bwd_dq_kernel(Q, K, V, RPB, O, DO, LSE, DELTA, DQ, DS,
                        sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                        so_b, so_y, so_x, so_h, sd_b, sd_y, sd_x, sd_h, sl_b, sl_y, sl_x, sl_h,
                        sg_b, sg_y, sg_x, sg_h,
                        heads, H, W, dil_h, dil_w, tiles_h, tiles_w, qk_scale, scale,
                        KH: tl.constexpr, KW: tl.constexpr, D: tl.constexpr, HAS_RPB: tl.constexpr,
                        RPB_GRAD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, KR: tl.constexpr,
                        KC: tl.constexpr, PRECISION: tl.constexpr):
    """dQ (strides ``sg_*``) per query tile, and ``DELTA = rowsum(O * dO)`` (fp32, strides of ``LSE``) for the
    dK/dV kernel that runs next; with ``RPB_GRAD`` also dLogits per (query, window slot) into
    ``DS`` ``[B, heads, H, W, KH*KW]`` (fp32, contiguous)."""
    b, h, gy, gx, LH, LW, qi, qj, q_valid = _program_tile(heads, H, W, dil_h, dil_w, tiles_h, tiles_w, BH, BW)
    sr, sc = _start(qi, LH, KH), _start(qj, LW, KW)
    y, x = gy + dil_h * qi, gx + dil_w * qj
    q = tl.load(_rows(Q, b, h, sq_b, sq_h, y, x, sq_y, sq_x, D), mask=q_valid[:, None], other=0.)
    do = tl.load(_rows(DO, b, h, sd_b, sd_h, y, x, sd_y, sd_x, D), mask=q_valid[:, None], other=0.)
    o = tl.load(_rows(O, b, h, so_b, so_h, y, x, so_y, so_x, D), mask=q_valid[:, None], other=0.)
    l_off = b * sl_b + h * sl_h + y * sl_y + x * sl_x
    lse = tl.load(LSE + l_off, mask=q_valid, other=0.)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + l_off, delta, mask=q_valid)
    rpb_ptr = RPB + h * (2 * KH - 1) * (2 * KW - 1)
    ds_row = (((b * heads + h) * H + y) * W + x) * (KH * KW)
    r_lo, r_hi = tl.min(sr, 0), tl.max(sr, 0) + KH
    c_lo, c_hi = tl.min(sc, 0), tl.max(sc, 0) + KW
    dq = tl.zeros([BH * BW, D], tl.float32)
    for r0 in range(r_lo, r_hi, KR):
        for c0 in range(c_lo, c_hi, KC):
            kr, kc, k_valid = _block(r0, c0, r_hi, c_hi, LH, LW, KR, KC)
            ky, kx = gy + dil_h * kr, gx + dil_w * kc
            k = tl.load(_rows(K, b, h, sk_b, sk_h, ky, kx, sk_y, sk_x, D))
            s, inside = _logits(q, k, qi, qj, kr, kc, sr, sc, k_valid, q_valid, rpb_ptr, qk_scale,
                                KH, KW, HAS_RPB, PRECISION)
            p = tl.where(inside, tl.exp2(s - lse[:, None]), 0.)
            v = tl.load(_rows(V, b, h, sv_b, sv_h, ky, kx, sv_y, sv_x, D))
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            if RPB_GRAD:
                slot = (kr[None, :] - sr[:, None]) * KW + (kc[None, :] - sc[:, None])
                tl.store(DS + ds_row[:, None] + slot, ds, mask=inside)
    tl.store(_rows(DQ, b, h, sg_b, sg_h, y, x, sg_y, sg_x, D), (dq * scale).to(DQ.dtype.element_ty),
             mask=q_valid[:, None])


@triton.jit
def _na2d_bwd_dkdv_kernel(Q, K, V, RPB, DO, LSE, DELTA, DK, DV,
                          sq_b, sq_y, sq_x, sq_h, sk_b, sk_y, sk_x, sk_h, sv_b, sv_y, sv_x, sv_h,
                          sd_b, sd_y, sd_x, sd_h, sl_b, sl_y, sl_x, sl_h, sg_b, sg_y, sg_x, sg_h,
                          heads, H, W, dil_h, dil_w, tiles_h, tiles_w, qk_scale, scale,
                          KH: tl.constexpr, KW: tl.constexpr, D: tl.constexpr, HAS_RPB: tl.constexpr,
                          BH: tl.constexpr, BW: tl.constexpr, QR: tl.constexpr, QC: tl.constexpr,
                          PRECISION: tl.constexpr):
    """dK, dV per key tile (``BH x BW`` keys): walks the queries whose windows can hold a key of the tile.
    ``DK`` and ``DV`` share the strides ``sg_*``."""
    b, h, gy, gx, LH, LW, kr, kc, k_valid = _program_tile(heads, H, W, dil_h, dil_w, tiles_h, tiles_w, BH, BW)
    ky, kx = gy + dil_h * kr, gx + dil_w * kc
    k = tl.load(_rows(K, b, h, sk_b, sk_h, ky, kx, sk_y, sk_x, D), mask=k_valid[:, None], other=0.)
    v = tl.load(_rows(V, b, h, sv_b, sv_h, ky, kx, sv_y, sv_x, D), mask=k_valid[:, None], other=0.)
    rpb_ptr = RPB + h * (2 * KH - 1) * (2 * KW - 1)
    # Queries whose window can reach a key of rows [first, last]: from 0 (when first <= K-1) or
    # first - K//2, to L-1 (when last >= L-K) or last + K//2.
    first_r, last_r = tl.min(kr, 0), tl.max(kr, 0)
    first_c, last_c = tl.min(kc, 0), tl.max(kc, 0)
    r_lo = tl.where(first_r <= KH - 1, 0, first_r - KH // 2)
    r_hi = tl.where(last_r >= LH - KH, LH, tl.minimum(last_r + KH // 2 + 1, LH))
    c_lo = tl.where(first_c <= KW - 1, 0, first_c - KW // 2)
    c_hi = tl.where(last_c >= LW - KW, LW, tl.minimum(last_c + KW // 2 + 1, LW))
    dk = tl.zeros([BH * BW, D], tl.float32)
    dv = tl.zeros([BH * BW, D], tl.float32)
    for r0 in range(r_lo, r_hi, QR):
        for c0 in range(c_lo, c_hi, QC):
            qi, qj, q_valid = _block(r0, c0, r_hi, c_hi, LH, LW, QR, QC)
            y, x = gy + dil_h * qi, gx + dil_w * qj
            q = tl.load(_rows(Q, b, h, sq_b, sq_h, y, x, sq_y, sq_x, D))
            do = tl.load(_rows(DO, b, h, sd_b, sd_h, y, x, sd_y, sd_x, D))
            l_off = b * sl_b + h * sl_h + y * sl_y + x * sl_x
            lse = tl.load(LSE + l_off)
            delta = tl.load(DELTA + l_off)
            sr, sc = _start(qi, LH, KH), _start(qj, LW, KW)
            s, inside = _logits(q, k, qi, qj, kr, kc, sr, sc, k_valid, q_valid, rpb_ptr, qk_scale,
                                KH, KW, HAS_RPB, PRECISION)  # [queries, keys]
            p = tl.where(inside, tl.exp2(s - lse[:, None]), 0.)
            dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    tl.store(_rows(DK, b, h, sg_b, sg_h, ky, kx, sg_y, sg_x, D), (dk * scale).to(DK.dtype.element_ty),
             mask=k_valid[:, None])
    tl.store(_rows(DV, b, h, sg_b, sg_h, ky, kx, sg_y, sg_x, D), dv.to(DV.dtype.element_ty), mask=k_valid[:, None])


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

def _strides(x: torch.Tensor) -> Tuple[int, ...]:
    """(batch, row, column, head) strides of ``[B, H, W, heads, D]`` (last dim contiguous) or ``[B, H, W, heads]``."""
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def _grid(q: torch.Tensor, dil: Tuple[int, int], bh: int, bw: int):
    B, H, W, heads, _ = q.shape
    tiles_h = triton.cdiv(triton.cdiv(H, dil[0]), bh)
    tiles_w = triton.cdiv(triton.cdiv(W, dil[1]), bw)
    return (B * heads, dil[0] * dil[1] * tiles_h * tiles_w), tiles_h, tiles_w


def _precision(q: torch.Tensor) -> str:
    """fp32 inputs keep fp32 products (``ieee``), matching the other backends; half inputs use the tensor cores."""
    return 'ieee' if q.dtype == torch.float32 else 'tf32'


def _contiguous_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _rpb_arg(rpb: Optional[torch.Tensor], dummy: torch.Tensor) -> torch.Tensor:
    """The fp32 table the kernels read; without a bias, ``dummy`` (an fp32 tensor the kernels never read: no
    allocation per call)."""
    if rpb is None:
        return dummy
    return rpb if rpb.dtype == torch.float32 and rpb.is_contiguous() else rpb.detach().float().contiguous()


def na2d_forward(q, k, v, rpb, kernel, dil, scale, tiles=TILES) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[B, H, W, heads, D]`` q, k, v -> (out of the same shape, log2-sum-exp ``[B, H, W, heads]`` fp32).
    ``tiles``: (query tile rows, columns, key rows, key columns per step); powers of two with a block of >= 16."""
    bh, bw, kr, kc = tiles
    q, k, v = (_contiguous_last(t) for t in (q, k, v))
    B, H, W, heads, D = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, W, heads), dtype=torch.float32, device=q.device)
    grid, tiles_h, tiles_w = _grid(q, dil, bh, bw)
    _na2d_fwd_kernel[grid](
        q, k, v, _rpb_arg(rpb, lse), out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        *_strides(lse), heads, H, W, dil[0], dil[1], tiles_h, tiles_w, scale * LOG2E,
        KH=kernel[0], KW=kernel[1], D=D, HAS_RPB=rpb is not None, BH=bh, BW=bw, KR=kr, KC=kc,
        PRECISION=_precision(q), num_warps=4, num_stages=2)
    return out, lse


@functools.lru_cache(maxsize=64)
def _bias_index(H: int, W: int, kernel: Tuple[int, int], dil: Tuple[int, int], device: torch.device):
    """``[H*W*KH*KW]`` RPB table index of every (query, window slot), the layout of the dQ kernel's ``DS``."""
    axes = []
    for length, ks, d in zip((H, W), kernel, dil):
        pos = torch.arange(length, device=device)
        group, i = pos % d, pos // d
        group_len = (length - group + d - 1) // d
        start = (i - ks // 2).clamp(min=0).minimum(group_len - ks)
        axes.append(start[:, None] + torch.arange(ks, device=device) - i[:, None] + ks - 1)  # [L, K]
    rel_h, rel_w = axes
    index = rel_h[:, None, :, None] * (2 * kernel[1] - 1) + rel_w[None, :, None, :]  # [H, W, KH, KW]
    return index.reshape(-1)


def na2d_backward(grad_out, q, k, v, out, lse, rpb, kernel, dil, scale, rpb_grad: bool, tiles=TILES):
    """Gradients of :func:`na2d_forward`: ``(dq, dk, dv, drpb or None)``; ``tiles`` as there (the dK/dV kernel
    takes key tiles of the query-tile shape and query blocks of the key-block shape)."""
    bh, bw, kr, kc = tiles
    q, k, v, grad_out = (_contiguous_last(t) for t in (q, k, v, grad_out))
    B, H, W, heads, D = q.shape
    delta = torch.empty_like(lse)  # [B, H, W, heads], written by the dQ kernel, read by the dK/dV kernel
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))  # contiguous
    ds = (torch.empty((B, heads, H, W, kernel[0] * kernel[1]), dtype=torch.float32, device=q.device)
          if rpb_grad else lse)
    table = _rpb_arg(rpb, lse)
    precision = _precision(q)
    common = dict(KH=kernel[0], KW=kernel[1], D=D, HAS_RPB=rpb is not None, PRECISION=precision,
                  num_warps=4, num_stages=2)
    grid, tiles_h, tiles_w = _grid(q, dil, bh, bw)
    sizes = (heads, H, W, dil[0], dil[1], tiles_h, tiles_w, scale * LOG2E, scale)
    _na2d_bwd_dq_kernel[grid](
        q, k, v, table, out, grad_out, lse, delta, dq, ds, *_strides(q), *_strides(k), *_strides(v),
        *_strides(out), *_strides(grad_out), *_strides(lse), *_strides(dq), *sizes, RPB_GRAD=rpb_grad, BH=bh,
        BW=bw, KR=kr, KC=kc, **common)
    _na2d_bwd_dkdv_kernel[grid](
        q, k, v, table, grad_out, lse, delta, dk, dv, *_strides(q), *_strides(k), *_strides(v),
        *_strides(grad_out), *_strides(lse), *_strides(dk), *sizes, BH=bh, BW=bw, QR=kr, QC=kc, **common)
    drpb = None
    if rpb_grad:
        index = _bias_index(H, W, tuple(kernel), tuple(dil), q.device)
        per_slot = ds.sum(0).view(heads, -1)  # [heads, H*W*KH*KW]
        drpb = torch.zeros((heads, math.prod(rpb.shape[1:])), dtype=torch.float32, device=q.device)
        drpb = drpb.index_add_(1, index, per_slot).view(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb
