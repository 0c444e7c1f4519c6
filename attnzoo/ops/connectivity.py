"""Sparsifiner's connectivity: the low-rank predictor's top-k key selection, and attention over it.

``topk_connectivity`` turns the projected queries and keys of one attention layer into the set of keys
each query keeps (the official ``MaskPredictor`` at inference): the cheap attention
``softmax(scale * q_c @ (k_c^T @ proj_n))`` over ``r`` basis vectors, its ``basis_topk`` largest
coefficients, the reconstruction ``coef @ basis`` (``basis``: the thresholded ``|proj_back_n^T|``,
``[r, Nk]``, non-negative) and its ``budget`` largest entries per query.

Tie rule: **among equal values the lower index wins**, for the coefficient top-k (lower basis index) and
for the key selection (lower key index). ``torch.topk`` leaves the order of ties unspecified, and it
differs between the CPU and CUDA kernels; random-initialised models do produce exact ties (near-uniform
coefficients, whose fp32 softmax values coincide, and rows whose selected basis rows are all zero), which
made the same weights select different keys on the two devices. Values that differ by rounding between two
implementations (near-ties) are no tie: those stay implementation-dependent.

The arithmetic is fp32 whatever the inputs' dtype (also under autocast: near-uniform coefficients would
tie en masse in bf16).

Output layouts (``layout=``):
    indices  int32 ``[B, heads, Nq, budget]``: each query's kept keys in ascending key order.
    bitmask  int32 ``[B, heads, Nq, ceil(Nk / 32)]``: bit ``j`` of word ``w`` set when key ``32 w + j`` is
             kept (the words are int32 bit patterns: bit 31 makes a word negative).

Backends (``attnzoo.ops.use_backend``):
    reference, torch  the definition: the unfused PyTorch ops (the official code's, with the tie rule).
    triton            one fused kernel (``_connectivity_triton.py``): one program per (batch, head, block of
                      query rows) keeps the coefficients, their top-k, the reconstruction of its rows and a
                      per-row threshold search in registers; the ``Nq x Nk`` reconstruction never reaches
                      memory. CUDA, or Triton's interpreter (``TRITON_INTERPRET=1``) on the CPU.
    auto              ``triton`` on CUDA when Triton is installed, else ``torch``. Measured on the H200 (torch
                      2.11, Triton 3.6, bf16 autocast, eager, inference B=256, train step B=128, keep 0.25;
                      ``benchmarks/sparsifiner_device.py``, ``benchmarks/results/h200_sparsifiner_fused.json``):
                      sparsifiner_deit_small 4459 against 1423 img/s in inference (3.1x) and 2525 against 1154
                      in training (2.2x) with the unfused ``torch`` predictor; sparsifiner_lvvit_small 3.1x / 2.0x.
``flex`` / ``natten`` requests run ``torch``.

``connectivity_attention`` is the attention of each query over the keys of a ``bitmask`` connectivity
(the class-token rows dense); its backends:
    reference  dense masked attention, as the official code (``-inf`` fill, softmax, ``nan_to_num``).
    torch      the bitmask as a boolean mask of one fused SDPA call.
    triton     flash-style Triton kernels, forward and backward (``_sparse_attn_triton.py``): key blocks of
               32 keys without a kept key are skipped, the others masked.
    auto       ``triton`` on CUDA where the kernels take the call (no dropout, head_dim 16-128 equal for q and
               v, fp16 / bf16 / fp32), else ``torch``. By counting the skipping rarely pays for unclustered
               top-k picks (at 197 tokens and keep 0.25 a 64-query x 32-key block holds no kept key with
               probability ~0.75^2048), yet the kernels were faster than the masked SDPA call (which also
               expands the bitmask to a ``[B, heads, N, N]`` boolean mask; not profiled). On the H200
               (``h200_sparsifiner_fused.json``, fused predictor in both) sparsifiner_deit_small ran 5380 /
               5475 / 5457 against 4430 / 4457 / 4475 img/s in inference and 2838 / 2949 / 2925 against 2621 /
               2634 / 2664 in training at keep 0.5 / 0.25 / 0.1 (224 px), 1006 / 997 / 1012 against 770 / 764 /
               773 and 697 / 693 / 701 against 589 / 585 / 591 at 384 px, with 0.92x (224) and 0.72x (384) the
               training peak memory. The one exception of that run: sparsifiner_lvvit_small training at keep
               0.25, 1404 against 1524 img/s (inference 3850 against 3189), with the attention shapes of DeiT-S
               (6 heads of 64, 197 tokens); not yet repeated.
"""
import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_dropout, check_int_range, check_same_device, check_tensor, triton_operands_unsupported
from ._dispatch import add_attention_macs, exporting, get_backend
from .neighborhood import _triton_interpreted, triton_available
from .sparse import _check_qkv, _topk_reference

__all__ = ['topk_connectivity', 'connectivity_attention', 'bitmask_to_mask', 'mask_to_bitmask', 'LAYOUTS']

LAYOUTS = ('indices', 'bitmask')


# ---------------------------------------------------------------------------------------------
# Layout conversions
# ---------------------------------------------------------------------------------------------

def _bit_values(device: torch.device) -> torch.Tensor:
    return torch.arange(32, dtype=torch.int32, device=device)


def mask_to_bitmask(mask: torch.Tensor) -> torch.Tensor:
    """bool ``[..., Nk]`` -> int32 ``[..., ceil(Nk / 32)]`` words (bit ``j`` of word ``w``: key ``32 w + j``)."""
    words = math.ceil(mask.shape[-1] / 32)
    padded = F.pad(mask.to(torch.int32), (0, words * 32 - mask.shape[-1]))
    bits = padded.view(*mask.shape[:-1], words, 32) << _bit_values(mask.device)
    return bits.sum(-1, dtype=torch.int32)  # distinct bits: the sum is the bitwise or, bit 31 included


def bitmask_to_mask(bitmask: torch.Tensor, num_keys: int) -> torch.Tensor:
    """int32 ``[..., W]`` words -> bool ``[..., num_keys]`` (``num_keys <= 32 W``)."""
    bits = (bitmask[..., None] >> _bit_values(bitmask.device)) & 1
    return bits.flatten(-2)[..., :num_keys].bool()


def _topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """bool mask of the ``k`` largest entries of each row of ``x`` ``[..., n]``, the lower index winning among
    equal values: everything above the k-th largest value, then the first entries equal to it."""
    kth = x.topk(k, dim=-1).values[..., -1:]  # the k-th largest value does not depend on the tie order
    above = x > kth
    tied = x == kth
    missing = k - above.sum(-1, keepdim=True)
    return above | (tied & (tied.cumsum(-1) <= missing))


def _mask_to_sorted_indices(mask: torch.Tensor, k: int) -> torch.Tensor:
    """bool ``[..., n]`` with ``k`` entries set per row -> int32 ``[..., k]`` positions, ascending.

    The ``k`` largest of ``mask * n + (n - 1 - position)``: the set entries, the lower position first (what a stable
    descending sort of the mask gives); ONNX has no stable sort, and ``topk`` exports everywhere."""
    n = mask.shape[-1]
    score = mask.to(torch.int64) * n + torch.arange(n - 1, -1, -1, device=mask.device)
    return score.topk(k, dim=-1).indices.to(torch.int32)


# ---------------------------------------------------------------------------------------------
# topk_connectivity
# ---------------------------------------------------------------------------------------------

def _check_predictor_args(q_c, k_c, proj_n, basis, scale, basis_topk, budget, layout, op):
    check_tensor(op, 'q_c', q_c, ('B', 'heads', 'Nq', 'c'))
    check_tensor(op, 'k_c', k_c, ('B', 'heads', 'Nk', 'c'))
    check_tensor(op, 'proj_n', proj_n, ('Nk', 'r'))
    check_tensor(op, 'basis', basis, ('r', 'Nk'))
    check_same_device(op, q_c=q_c, k_c=k_c, proj_n=proj_n, basis=basis)
    B, H, _, c = q_c.shape
    Nk, r = proj_n.shape
    if k_c.shape[:2] != (B, H) or k_c.shape[-1] != c:
        raise ValueError(f'{op}: k_c must be [B={B}, heads={H}, Nk, c={c}], got {list(k_c.shape)}')
    if k_c.shape[2] != Nk or tuple(basis.shape) != (r, Nk):
        raise ValueError(f'{op}: k_c [.., Nk, c], proj_n [Nk, r] and basis [r, Nk] disagree: '
                         f'{list(k_c.shape)}, {list(proj_n.shape)}, {list(basis.shape)}')
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f'{op}: scale must be a finite number, got {scale!r}')
    check_int_range(op, 'basis_topk', basis_topk, 1, r, f'r={r}')
    check_int_range(op, 'budget', budget, 1, Nk, f'Nk={Nk}')
    if layout not in LAYOUTS:
        raise ValueError(f'{op}: layout must be one of {LAYOUTS}, got {layout!r}')


def _fp32_region(device: torch.device):
    """Autocast off on ``device`` (a no-op context where the device has no autocast, e.g. ``meta``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _connectivity_torch(q_c, k_c, proj_n, basis, scale, basis_topk, budget, layout):
    """The unfused definition (the official ``MaskPredictor`` ops, fp32, the tie rule)."""
    with _fp32_region(q_c.device):
        k_down = k_c.float().transpose(-1, -2) @ proj_n.float()  # [B, heads, c, r]
        coef = ((q_c.float() @ k_down) * scale).softmax(dim=-1)
        coef = coef.masked_fill(~_topk_mask(coef, basis_topk), 0.)
        keep = _topk_mask(coef @ basis.float(), budget)
    if layout == 'bitmask':
        return mask_to_bitmask(keep)
    return _mask_to_sorted_indices(keep, budget)


def _connectivity_triton(q_c, k_c, proj_n, basis, scale, basis_topk, budget, layout):
    from . import _connectivity_triton  # imports Triton: only when the kernel runs
    with _fp32_region(q_c.device):
        k_down = (k_c.float().transpose(-1, -2) @ proj_n.float()).contiguous()  # [B, heads, c, r]: 1/Nq of the work
    return _connectivity_triton.connectivity(q_c, k_down, basis.float().contiguous(), float(scale), basis_topk,
                                             budget, layout == 'bitmask')


def _triton_device_ok(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``x``'s device: CUDA, or the CPU under Triton's interpreter."""
    return triton_available() and (x.is_cuda or _triton_interpreted())


def _select_predictor_backend(q_c: torch.Tensor, op: str) -> str:
    requested = get_backend()
    if requested == 'auto':
        return 'triton' if q_c.is_cuda and triton_available() and not exporting() else 'torch'
    if requested == 'triton':
        if not _triton_device_ok(q_c):
            raise RuntimeError(f"{op}: backend 'triton' needs Triton and a CUDA device (q_c is on {q_c.device})")
        return 'triton'
    return 'torch'


def topk_connectivity(q_c: torch.Tensor, k_c: torch.Tensor, proj_n: torch.Tensor, basis: torch.Tensor,
                      scale: float, basis_topk: int, budget: int, layout: str = 'indices') -> torch.Tensor:
    """The keys each query keeps, as Sparsifiner's predictor selects them (tie rule in the module docstring).

    Args:
        q_c: ``[B, heads, Nq, c]`` projected queries (Sparsifiner: the non-class rows of ``proj_c_q(q)``).
        k_c: ``[B, heads, Nk, c]`` projected keys (``proj_c_k(k)``).
        proj_n: ``[Nk, r]`` Linformer key reduction.
        basis: ``[r, Nk]`` non-negative basis (the thresholded ``|proj_back_n^T|``).
        scale: logit scale of the cheap attention (official: ``heads ** -0.5``).
        basis_topk: coefficients kept per query, in ``[1, r]``.
        budget: keys kept per query, in ``[1, Nk]``.
        layout: ``'indices'`` (int32 ``[B, heads, Nq, budget]``, ascending) or ``'bitmask'`` (int32
            ``[B, heads, Nq, ceil(Nk / 32)]``).

    Returns:
        The connectivity in ``layout``, without gradient.
    """
    op = 'topk_connectivity'
    _check_predictor_args(q_c, k_c, proj_n, basis, scale, basis_topk, budget, layout, op)
    args = (q_c.detach(), k_c.detach(), proj_n.detach(), basis.detach(), scale, basis_topk, budget, layout)
    if _select_predictor_backend(q_c, op) == 'triton':
        return _connectivity_triton(*args)
    return _connectivity_torch(*args)


# ---------------------------------------------------------------------------------------------
# connectivity_attention
# ---------------------------------------------------------------------------------------------

class _SparseAttnFunction(torch.autograd.Function):
    """Eager autograd of the bitmask attention kernels."""

    @staticmethod
    def forward(ctx, q, k, v, bitmask, dense_rows, scale):
        from . import _sparse_attn_triton
        out, lse = _sparse_attn_triton.forward(q, k, v, bitmask, dense_rows, scale)
        ctx.save_for_backward(q, k, v, bitmask, out, lse)
        ctx.params = (dense_rows, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from . import _sparse_attn_triton
        q, k, v, bitmask, out, lse = ctx.saved_tensors
        dq, dk, dv = _sparse_attn_triton.backward(grad_out, q, k, v, bitmask, out, lse, *ctx.params)
        return dq, dk, dv, None, None, None


def _full_mask(bitmask: torch.Tensor, num_keys: int, dense_rows: int) -> torch.Tensor:
    """Bool ``[B, heads, Nq, Nk]``: the bitmask's rows after ``dense_rows`` all-True rows."""
    mask = bitmask_to_mask(bitmask, num_keys)
    if not dense_rows:
        return mask
    return torch.cat([mask.new_ones(*mask.shape[:2], dense_rows, num_keys), mask], dim=2)


def _attention_triton_unsupported(q: torch.Tensor, v: torch.Tensor, dropout_p: float) -> Optional[str]:
    """Why the Triton kernels cannot run these arguments, or None when they can."""
    if dropout_p > 0:
        return f'dropout_p={dropout_p}'
    operands = triton_operands_unsupported(q, v)
    if operands is not None:
        return operands
    if not _triton_device_ok(q):
        return f'tensors on {q.device} without Triton and a CUDA device'
    return None


def _auto_cuda_attention_backend(q: torch.Tensor, v: torch.Tensor, dropout_p: float) -> str:
    """``auto``'s choice for CUDA inputs: 'triton' where the kernels take the call, else 'torch' (module docstring)."""
    return 'triton' if _attention_triton_unsupported(q, v, dropout_p) is None else 'torch'


def _select_attention_backend(q: torch.Tensor, v: torch.Tensor, dropout_p: float, op: str) -> str:
    """The backend of ``connectivity_attention``: ``auto`` is ``_auto_cuda_attention_backend`` on CUDA and 'torch'
    on the CPU; a requested 'triton' the kernels cannot take is a named error."""
    requested = get_backend()
    if requested == 'auto':
        return _auto_cuda_attention_backend(q, v, dropout_p) if q.is_cuda and not exporting() else 'torch'
    if requested == 'triton':
        reason = _attention_triton_unsupported(q, v, dropout_p)
        if reason is not None:
            raise ValueError(f"{op}: backend 'triton' does not support {reason}; use 'torch' or 'auto'")
    return requested


def connectivity_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bitmask: torch.Tensor,
                           num_kept: int, dense_rows: int = 0, scale: Optional[float] = None,
                           dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention of each query over the keys its ``bitmask`` row keeps.

    Args:
        q: ``[B, heads, Nq, head_dim]``; k: ``[B, heads, Nk, head_dim]``; v: ``[B, heads, Nk, head_dim_v]``.
        bitmask: int32 ``[B, heads, Nq - dense_rows, ceil(Nk / 32)]`` (``topk_connectivity``'s ``bitmask``
            layout); bits past ``Nk`` are ignored. A row keeping no key outputs zeros.
        num_kept: keys each bitmask row keeps (Sparsifiner: the budget), in ``[1, Nk]``; the MAC count.
        dense_rows: the first ``dense_rows`` query rows attend to every key (Sparsifiner: 1, the class token).
        scale: logit scale, default ``head_dim ** -0.5``.
        dropout_p: attention dropout (not with the ``triton`` backend).

    Returns:
        ``[B, heads, Nq, head_dim_v]``.

    MACs counted: ``B*heads*(dense_rows*Nk + (Nq-dense_rows)*num_kept)*(Dqk+Dv)``.
    """
    op = 'connectivity_attention'
    _check_qkv(q, k, v, op)
    B, H, Nq, D = q.shape
    Nk, Dv = k.shape[2], v.shape[-1]
    check_int_range(op, 'dense_rows', dense_rows, 0, Nq, f'Nq={Nq}')
    check_int_range(op, 'num_kept', num_kept, 1, Nk, f'Nk={Nk}')
    words = math.ceil(Nk / 32)
    if not isinstance(bitmask, torch.Tensor) or bitmask.dtype != torch.int32:
        got = getattr(bitmask, 'dtype', type(bitmask).__name__)
        raise TypeError(f'{op}: bitmask must be an int32 tensor, got {got}')
    if tuple(bitmask.shape) != (B, H, Nq - dense_rows, words):
        raise ValueError(f'{op}: bitmask must have shape [B={B}, heads={H}, Nq - dense_rows={Nq - dense_rows}, '
                         f'ceil(Nk / 32)={words}], got {list(bitmask.shape)}')
    check_same_device(op, q=q, bitmask=bitmask)
    check_dropout(op, dropout_p)
    scale = D ** -0.5 if scale is None else scale
    add_attention_macs(B * H * (dense_rows * Nk + (Nq - dense_rows) * num_kept) * (D + Dv))
    backend = _select_attention_backend(q, v, dropout_p, op)
    if backend == 'reference':
        return _topk_reference(q, k, v, _full_mask(bitmask, Nk, dense_rows), scale, dropout_p)
    if backend == 'triton':
        return _SparseAttnFunction.apply(q, k, v, bitmask, dense_rows, float(scale))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_full_mask(bitmask, Nk, dense_rows),
                                          dropout_p=dropout_p, scale=scale)
