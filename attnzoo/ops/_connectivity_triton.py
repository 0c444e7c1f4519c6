"""Fused Sparsifiner connectivity predictor in Triton (``attnzoo.ops.topk_connectivity``, backend ``triton``).

One program per (batch, head, block of ``BM`` query rows) keeps in registers: the cheap low-rank logits
``q_c @ k_down`` of its rows (``[BM, r]``), their softmax, the top ``basis_topk`` coefficients, the
reconstruction ``[BM, Nk]`` (the sum of the selected coefficients times their thresholded basis rows) and
its top-``budget`` selection. Nothing of size ``Nq x Nk`` but the output is written.

Selection without a sort: the reconstructed scores are non-negative fp32, so their int32 bit patterns
are ordered as the values. A per-row bisection over those bit patterns (at most 31 halvings, stopping as
soon as ``count(key >= lo) == budget``) finds the ``budget``-th largest value ``T``; the row keeps every
key above ``T`` and, of the keys equal to ``T``, the lowest-index ones (the tie rule of
``topk_connectivity``). The coefficient top-k follows the same rule (iterated max, lowest index on ties).

Output: compact int32 key indices ``[B, heads, Nq, budget]`` in ascending key order, or an int32 bitmask
``[B, heads, Nq, ceil(Nk / 32)]`` (bit ``j`` of word ``w``: key ``32 w + j``).

With ``TRITON_INTERPRET=1`` (set before this module is imported) Triton's interpreter runs the kernel on
CPU tensors, which is how the CPU test suite checks it.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _cheap_coefficients(QC, KD, b, h, bh, rows, row_ok, sq_b, sq_h, sq_n, sq_c, C, R, scale,
                        BM: tl.constexpr, BR: tl.constexpr):
    """``[BM, BR]`` softmax over the ``R`` basis vectors of the cheap attention of the rows (0 past ``R``)."""
    r = tl.arange(0, BR)
    r_ok = r < R
    cheap = tl.zeros([BM, BR], tl.float32)
    q_ptr = QC + b * sq_b + h * sq_h + rows * sq_n
    kd_ptr = KD + bh * C * R + r
    for c in range(C):
        q_col = tl.load(q_ptr + c * sq_c, mask=row_ok, other=0.).to(tl.float32)
        kd_row = tl.load(kd_ptr + c * R, mask=r_ok, other=0.)
        cheap += q_col[:, None] * kd_row[None, :]
    logits = tl.where(r_ok[None, :], cheap * scale, -float('inf'))
    e = tl.exp(logits - tl.max(logits, 1)[:, None])
    return e / tl.sum(e, 1)[:, None]


@triton.jit
def _reconstruct(coef, BASIS, R, Nk, BM: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, TOPK: tl.constexpr):
    """``[BM, BN]`` scores: the ``TOPK`` largest of the ``R`` coefficients of each row (lowest index on ties) times
    their basis rows (``BASIS`` ``[R, Nk]``, non-negative), summed; 0 past ``Nk``."""
    r = tl.arange(0, BR)
    n = tl.arange(0, BN)
    n_ok = n < Nk
    work = tl.where(r[None, :] < R, coef, -1.)  # past R: never picked
    recon = tl.zeros([BM, BN], tl.float32)
    for _ in tl.static_range(TOPK):
        best = tl.max(work, 1)
        j = tl.min(tl.where(work == best[:, None], r[None, :], BR), 1)
        work = tl.where(r[None, :] == j[:, None], -2., work)
        basis_row = tl.load(BASIS + j[:, None] * Nk + n[None, :], mask=n_ok[None, :], other=0.)
        recon += best[:, None] * basis_row
    return recon


@triton.jit
def _select(recon, row_ok, Nk, budget, BN: tl.constexpr):
    """``[BM, BN]`` bool: the ``budget`` largest scores of each row, the lowest-index ones among equal scores."""
    n = tl.arange(0, BN)
    n_ok = n < Nk
    key = tl.where(n_ok[None, :], recon.to(tl.int32, bitcast=True), -1)  # non-negative floats: ordered as ints
    lo = tl.min(tl.where(n_ok[None, :], key, 2147483647), 1)
    hi = tl.max(key, 1) + 1
    count = tl.sum((key >= lo[:, None]).to(tl.int32), 1)
    # invariant: count(key >= lo) >= budget > count(key >= hi)
    active = row_ok & (count != budget) & (hi - lo > 1)
    while tl.max(active.to(tl.int32), 0) > 0:
        mid = lo + (hi - lo) // 2
        c = tl.sum((key >= mid[:, None]).to(tl.int32), 1)
        take = c >= budget
        lo = tl.where(active & take, mid, lo)
        count = tl.where(active & take, c, count)
        hi = tl.where(active & (c < budget), mid, hi)
        active = active & (count != budget) & (hi - lo > 1)
    above = key > lo[:, None]
    tied = key == lo[:, None]
    missing = budget - tl.sum(above.to(tl.int32), 1)
    return above | (tied & (tl.cumsum(tied.to(tl.int32), 1) <= missing[:, None]))


@triton.jit
def _connectivity_kernel(QC, KD, BASIS, OUT, sq_b, sq_h, sq_n, sq_c, so_b, so_h, so_n,
                         heads, Nq, Nk, C, R, WORDS, scale, budget,
                         TOPK: tl.constexpr, BM: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr,
                         BITMASK: tl.constexpr):
    """Kept keys of ``BM`` query rows of one (batch, head): indices or bitmask words into ``OUT``."""
    bh = tl.program_id(0)
    b, h = bh // heads, bh % heads
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    row_ok = rows < Nq
    coef = _cheap_coefficients(QC, KD, b, h, bh, rows, row_ok, sq_b, sq_h, sq_n, sq_c, C, R, scale, BM, BR)
    keep = _select(_reconstruct(coef, BASIS, R, Nk, BM, BR, BN, TOPK), row_ok, Nk, budget, BN)
    n = tl.arange(0, BN)
    out_row = OUT + b * so_b + h * so_h + rows * so_n
    if BITMASK:
        bits = tl.where(keep, tl.full([BM, BN], 1, tl.int32) << (n % 32)[None, :], 0)
        words = tl.sum(tl.reshape(bits, [BM, BN // 32, 32]), 2)
        w = tl.arange(0, BN // 32)
        tl.store(out_row[:, None] + w[None, :], words.to(tl.int32), mask=row_ok[:, None] & (w[None, :] < WORDS))
    else:
        position = tl.cumsum(keep.to(tl.int32), 1) - 1
        tl.store(out_row[:, None] + position, tl.broadcast_to(n[None, :], [BM, BN]), mask=keep & row_ok[:, None])


def connectivity(q_c: torch.Tensor, k_down: torch.Tensor, basis: torch.Tensor, scale: float, basis_topk: int,
                 budget: int, bitmask: bool) -> torch.Tensor:
    """``q_c`` ``[B, heads, Nq, c]`` (any float dtype, any strides), ``k_down`` ``[B, heads, c, r]`` and ``basis``
    ``[r, Nk]`` (fp32, contiguous) -> int32 indices ``[B, heads, Nq, budget]`` or bitmask
    ``[B, heads, Nq, ceil(Nk / 32)]`` (see the module docstring)."""
    B, H, Nq, C = q_c.shape
    R, Nk = basis.shape
    words = triton.cdiv(Nk, 32)
    out = torch.empty((B, H, Nq, words if bitmask else budget), dtype=torch.int32, device=q_c.device)
    bn = max(32, triton.next_power_of_2(Nk))
    bm = max(2, min(16, 4096 // bn))  # about 4096 scores per program in registers
    grid = (B * H, triton.cdiv(Nq, bm))
    _connectivity_kernel[grid](
        q_c, k_down, basis, out, *q_c.stride(), *out.stride()[:3], H, Nq, Nk, C, R, words, scale, budget,
        TOPK=basis_topk, BM=bm, BR=max(2, triton.next_power_of_2(R)), BN=bn, BITMASK=bitmask, num_warps=4)
    return out
