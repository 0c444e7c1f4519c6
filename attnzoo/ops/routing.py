"""Bi-level routing attention (BRA), the attention of BiFormer (Zhu et al., CVPR 2023).

Semantics are those of the official ``ops/bra_legacy.py`` (and so of the released weights), on a map of
``H x W`` tokens split into ``Sh x Sw`` regions of ``rh x rw = H/Sh x W/Sw`` tokens (``num_regions``
is the number of regions *per side*, the official ``n_win``; regions are numbered row-major):

1. Region descriptors: the mean of q and of k over each region's tokens, on the full channel vector
   (all heads concatenated head-major, ``c = head * head_dim + d``). They are **detached**.
2. Routing: ``logits = (q_r * scale) @ k_r^T`` (``[B, R, R]``, ``R = Sh*Sw``); every query region keeps
   its ``topk`` highest-scoring key regions. One routing graph per image, **shared by all heads**; the
   routing softmax is never used and nothing is learned.
3. Token attention: each query token attends, per head, to every token of its region's ``topk``
   routed regions with a plain softmax of ``q . k * scale``. No bias, no mask, no dropout. BiFormer
   passes ``scale = (heads * head_dim) ** -0.5`` (the full channel count), not ``head_dim ** -0.5``.

``topk == R`` is plain global attention (softmax is invariant to the key order), which is how the
BiFormer models run their stage-4 attention through this op with ``num_regions=1, topk=1``.

Backends (``attnzoo.ops.use_backend``):
    reference  the official gather: fused K/V copied ``topk`` times, then matmul / softmax / matmul.
    torch      the default (CPU and CUDA). ``topk == R``: one SDPA call; ``topk == 1``: a 1x gather; when the routed
               keys are at least a quarter of the map: SDPA with the routing as a boolean mask on
               region-major tokens (no K/V copy); otherwise the gather, into SDPA.
    flex       CUDA: tokens region-major, the routing as a per-image ``BlockMask`` built from the
               routing indices (blocks of 128 tokens), and the same routing in ``mask_mod`` (flex's eager
               path ignores block sparsity, so a block mask alone would silently run dense). Never copies
               K/V: 12-15x less memory than the official gather at the biformer_small shapes on an H200,
               but 2-3.5x slower than ``torch`` there, so ``auto`` does not pick it (benchmarks/README.md).
    triton     CUDA: attnzoo's fused kernels (``_routing_triton.py``): each query region walks its routed key
               regions straight from the routing index with an online softmax, q/k/v read through their
               strides; dK/dV over the reverse routing. Never copies K/V, never builds a mask. ``topk == R``
               runs as one SDPA call, as in ``torch``.
    auto       CPU: ``torch``. CUDA: ``triton`` for inference (no input requires grad, or grad mode off) and
               ``torch`` for training, as measured on the H200 (torch 2.11, Triton 3.6, bf16 autocast, eager,
               inference B=256, train step B=128; ``benchmarks/routing_triton_device.py``,
               ``benchmarks/results/h200_routing_triton_models.json``): inference img/s triton / torch 4420 / 3991
               (biformer_small, 1.11x) and 8871 / 8011 (biformer_tiny, 1.11x); training 763 / 1022 (0.75x) and
               1505 / 1932 (0.78x). Op level (B=64 fwd+bwd, ``h200_routing_triton_ops.json``) triton took
               1.45 / 1.96 / 2.01 ms against torch's 1.85 / 2.09 / 1.73 ms at the three stage shapes, with
               0.18-0.38x its memory. The orders of ``_AUTO_CUDA_ORDER`` are tried in turn; the first backend
               that supports the call runs it ('torch' supports every call).

Non-finite keys (``attnzoo.ops._nonfinite``): a NaN or an infinity in a token's k or v reaches only the queries of
the regions routed to its region. The paths that attend through a mask (``torch``'s dense masked SDPA, ``flex``)
would spread it to every query, since masked pairs still multiply their value by a zero weight: they zero such
keys first and set the outputs of the query regions routed to one to NaN after. The gather paths (``reference``,
``torch``'s gather, ``topk == R``) and ``triton`` (each program attends all of its queries to every key it loads)
do not need it and are not given it: there a NaN in one element of v leaves the other elements of the outputs
finite, and a ``-inf`` logit is a zero weight. A NaN key also turns its region's routing logits to NaN, so the
region-mean routing itself changes with it.

Tensor layout: ``[B, H, W, heads, head_dim]`` (heads-last, as ``attnzoo.ops.na2d``).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ._checks import (TRITON_DTYPES, check_flex_device, check_index_values, check_int_range, check_qkv,
                      check_scale)
from ._dispatch import add_attention_macs, counting_macs, exporting, flex_available, get_backend
from ._nonfinite import nonfinite_keys, poison, zero_keys
from .neighborhood import _compiled_flex_attention, _triton_interpreted, triton_available

__all__ = ['routing_attention', 'region_routing']

IntOrPair = Union[int, Sequence[int]]

# flex block size (tokens); the routing is exact through mask_mod whatever the region size.
FLEX_BLOCK_SIZE = 128
# torch backend: run dense masked SDPA instead of the gather when the routed keys are at least this fraction of
# the map (<= 4x the gathered FLOPs, e.g. BiFormer stage 3 at 224: 16 of 49 regions).
_DENSE_FRACTION = 0.25
# Backends ``auto`` tries on CUDA tensors, in order, for calls that build no autograd graph ('inference') and for
# those that do ('training'): the first that supports the call runs it ('torch' supports every call). Measured on
# the H200 (module docstring): the fused kernels are faster in inference, their backward slower than the torch path's.
_AUTO_CUDA_ORDER = {'inference': ('triton', 'torch'), 'training': ('torch',)}
# The fused kernels: head dims up to this (padded to a power of two inside), these dtypes.
_TRITON_MAX_HEAD_DIM = 128


# ---------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------

def _pair(value: IntOrPair, name: str) -> Tuple[int, int]:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise TypeError(f'{name} must be an int or a pair of ints (regions per side), got {value!r}')
    if any(v < 1 for v in values):
        raise ValueError(f'{name} must be >= 1 (regions per side), got {value!r}')
    return values


def _check_inputs(q, k, v, num_regions, topk, op: str) -> Tuple[int, int]:
    check_qkv(op, q, k, v, ('B', 'H', 'W', 'heads', 'head_dim'))
    sh, sw = _pair(num_regions, 'num_regions')
    H, W = int(q.shape[1]), int(q.shape[2])
    if H % sh or W % sw:
        raise ValueError(
            f'{op}: the map ({H}x{W}) must be divisible by num_regions={num_regions!r} (regions per side); pad it '
            f'to a multiple first (BiFormer\'s attention layer zero-pads its input, as the released weights expect)')
    check_int_range(op, 'topk', topk, 1, sh * sw, f'num_regions**2 = {sh * sw}')
    return sh, sw


def _check_routing(routing, q: torch.Tensor, shape: Tuple[int, int, int], check_values: bool, op: str) -> None:
    """A precomputed routing: an int64 tensor of ``shape`` ``[B, R, topk]`` on the device of q; with
    ``check_values`` also distinct entries in ``[0, R)`` per row (one device sync)."""
    if not isinstance(check_values, bool):
        raise TypeError(f'{op}: check_routing must be a bool, got {check_values!r}')
    if not isinstance(routing, torch.Tensor) or routing.dtype != torch.int64:
        raise TypeError(f'{op}: routing must be an int64 tensor, got {getattr(routing, "dtype", type(routing).__name__)}')
    if tuple(routing.shape) != shape:
        raise ValueError(f'{op}: routing must have shape [B, R, topk] = {shape}, got {tuple(routing.shape)}')
    if routing.device != q.device:
        raise ValueError(f'{op}: routing must be on the device of q ({q.device}), got {routing.device}')
    if check_values and routing.numel() and routing.device.type != 'meta' and not torch.compiler.is_compiling():
        check_index_values(op, 'routing', routing, shape[1], f'R={shape[1]}', 'check_routing')


# ---------------------------------------------------------------------------------------------
# Region-major layout and routing
# ---------------------------------------------------------------------------------------------

def _to_regions(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """``[B, H, W, h, D]`` -> ``[B, R, T, h, D]`` (regions row-major, tokens row-major inside a region)."""
    B, H, W, h, D = x.shape
    x = x.reshape(B, sh, H // sh, sw, W // sw, h, D).permute(0, 1, 3, 2, 4, 5, 6)
    return x.reshape(B, sh * sw, (H // sh) * (W // sw), h, D)


def _from_regions(x: torch.Tensor, sh: int, sw: int, H: int, W: int) -> torch.Tensor:
    """Inverse of ``_to_regions``."""
    B, _, _, h, D = x.shape
    x = x.reshape(B, sh, sw, H // sh, W // sw, h, D).permute(0, 1, 3, 2, 4, 5, 6)
    return x.reshape(B, H, W, h, D)


def _region_logits(q_r: torch.Tensor, k_r: torch.Tensor, scale: float) -> torch.Tensor:
    """``(q_r * scale) @ k_r^T`` on ``[B, R, C]``. While MACs are counted it is written as a broadcast product, so
    that the layer-level count (``attnzoo.utils.count_macs``) does not count it a second time: the op reports its
    MACs itself."""
    q_r = q_r * scale
    if counting_macs():
        return (q_r.unsqueeze(2) * k_r.unsqueeze(1)).sum(-1)
    return q_r @ k_r.transpose(-1, -2)


def region_routing(q: torch.Tensor, k: torch.Tensor, num_regions: IntOrPair, topk: int,
                   scale: Optional[float] = None) -> torch.Tensor:
    """BiFormer's routing alone: indices ``[B, R, topk]`` of the key regions each query region attends to.

    Args:
        q, k: ``[B, H, W, heads, head_dim]``; H, W divisible by ``num_regions``.
        num_regions: regions per side (int or ``(Sh, Sw)``); ``R = Sh * Sw``.
        topk: routed regions per query region, ``1 <= topk <= R``.
        scale: multiplies the region-mean q before the product (default ``(heads*head_dim) ** -0.5``, as the
            official code; it does not change the ranking except through rounding).
    """
    sh, sw = _check_inputs(q, k, k, num_regions, topk, 'region_routing')
    check_scale('region_routing', 'scale', scale)
    if scale is None:
        scale = (q.shape[-2] * q.shape[-1]) ** -0.5
    return _route(q, k, sh, sw, topk, scale)


def _route(q, k, sh, sw, topk, scale) -> torch.Tensor:
    with torch.no_grad():
        B, H, W, h, D = q.shape
        q_r = q.detach().reshape(B, sh, H // sh, sw, W // sw, h * D).mean((2, 4)).reshape(B, sh * sw, h * D)
        k_r = k.detach().reshape(B, sh, H // sh, sw, W // sw, h * D).mean((2, 4)).reshape(B, sh * sw, h * D)
        return torch.topk(_region_logits(q_r, k_r, scale), k=topk, dim=-1).indices


def _routed_mask(idx: torch.Tensor, regions: int) -> torch.Tensor:
    """``[B, R, topk]`` indices -> ``[B, R, R]`` bool adjacency (query region, key region)."""
    mask = torch.zeros(*idx.shape[:2], regions, dtype=torch.bool, device=idx.device)
    return mask.scatter_(-1, idx, torch.ones_like(idx, dtype=torch.bool))


def _regions_attending(bad: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, R, T, h]`` keys (region-major) and the ``[B, R, R]`` routing adjacency -> bool ``[B, R, 1, h]``:
    the query regions (per head) routed to a region that holds one of those keys."""
    return (routed.float() @ bad.any(2).float()).unsqueeze(2) > 0  # counts <= R: exact in fp32


# ---------------------------------------------------------------------------------------------
# reference backend: the official fused K/V gather (topk-fold copy)
# ---------------------------------------------------------------------------------------------

def _routing_reference(q, k, v, idx, sh, sw, scale):
    B, H, W, h, Dk = q.shape
    Dv = v.shape[-1]
    R, T, topk = sh * sw, (H // sh) * (W // sw), idx.shape[-1]
    q_reg = _to_regions(q, sh, sw)  # [B, R, T, h, Dk]
    kv = torch.cat([_to_regions(k, sh, sw).flatten(-2), _to_regions(v, sh, sw).flatten(-2)], -1)  # [B, R, T, C]
    C = kv.shape[-1]
    kv_sel = torch.gather(kv.unsqueeze(1).expand(B, R, R, T, C), 2,
                          idx.view(B, R, topk, 1, 1).expand(B, R, topk, T, C))  # [B, R, topk, T, C]: a real copy
    k_sel, v_sel = kv_sel.split([h * Dk, h * Dv], -1)
    k_sel = k_sel.reshape(B * R, topk * T, h, Dk).permute(0, 2, 3, 1)  # [BR, h, Dk, topk*T]
    v_sel = v_sel.reshape(B * R, topk * T, h, Dv).transpose(1, 2)  # [BR, h, topk*T, Dv]
    q_reg = q_reg.reshape(B * R, T, h, Dk).transpose(1, 2)  # [BR, h, T, Dk]
    attn = ((q_reg * scale) @ k_sel).softmax(-1)
    out = (attn @ v_sel).transpose(1, 2).reshape(B, R, T, h, Dv)
    return _from_regions(out, sh, sw, H, W)


# ---------------------------------------------------------------------------------------------
# torch backend
# ---------------------------------------------------------------------------------------------

def _full_attention(q, k, v, scale):
    B, H, W, h, Dk = q.shape
    out = F.scaled_dot_product_attention(q.reshape(B, H * W, h, Dk).transpose(1, 2),
                                         k.reshape(B, H * W, h, Dk).transpose(1, 2),
                                         v.reshape(B, H * W, h, v.shape[-1]).transpose(1, 2), scale=scale)
    return out.transpose(1, 2).reshape(B, H, W, h, v.shape[-1])


def _routing_torch(q, k, v, idx, sh, sw, scale):
    B, H, W, h, Dk = q.shape
    Dv = v.shape[-1]
    R, T, topk = sh * sw, (H // sh) * (W // sw), idx.shape[-1]

    def heads_first(x):  # [B, R, T, h, D] -> [B, h, R*T, D]
        return x.reshape(B, R * T, h, x.shape[-1]).transpose(1, 2)

    q_reg, k_reg, v_reg = (_to_regions(t, sh, sw) for t in (q, k, v))
    if topk == 1 or topk < _DENSE_FRACTION * R:
        # gather the routed regions' K/V (a topk-fold copy for topk > 1), one SDPA call per query region
        flat = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * R).reshape(-1)  # [B*R*topk]
        k_sel = k_reg.reshape(B * R, T, h, Dk).index_select(0, flat).reshape(B * R, topk * T, h, Dk)
        v_sel = v_reg.reshape(B * R, T, h, Dv).index_select(0, flat).reshape(B * R, topk * T, h, Dv)
        out = F.scaled_dot_product_attention(q_reg.reshape(B * R, T, h, Dk).transpose(1, 2),
                                             k_sel.transpose(1, 2), v_sel.transpose(1, 2), scale=scale)
        out = out.transpose(1, 2).reshape(B, R, T, h, Dv)
    else:
        # dense attention over region-major tokens, the routing as a boolean mask: no K/V copy
        routed = _routed_mask(idx, R)
        bad = nonfinite_keys(k_reg, v_reg)  # [B, R, T, h] or None (module docstring: non-finite keys)
        if bad is not None:
            k_reg, v_reg = zero_keys(k_reg, bad), zero_keys(v_reg, bad)
        mask = routed[:, :, None, :, None].expand(B, R, T, R, T).reshape(B, 1, R * T, R * T)
        out = F.scaled_dot_product_attention(heads_first(q_reg), heads_first(k_reg), heads_first(v_reg),
                                             attn_mask=mask, scale=scale)
        out = out.transpose(1, 2).reshape(B, R, T, h, Dv)
        if bad is not None:
            out = poison(out, _regions_attending(bad, routed))
    return _from_regions(out, sh, sw, H, W)


# ---------------------------------------------------------------------------------------------
# flex backend: region-major tokens, routing as a per-image block mask + mask_mod (CUDA)
# ---------------------------------------------------------------------------------------------

def flex_routing_block_mask(idx: torch.Tensor, regions: int, region_tokens: int,
                            block_size: int = FLEX_BLOCK_SIZE):
    """The routing ``idx [B, R, topk]`` as a flex ``BlockMask`` over ``R * region_tokens`` region-major tokens.

    Blocks of ``block_size`` tokens; a block pair is *full* when every token pair in it is routed, *partial*
    when some are, absent otherwise. ``mask_mod`` encodes the exact routing (token region = index //
    ``region_tokens``), so the result is exact for any region size, also in flex's eager path (which
    evaluates only ``mask_mod``).
    """
    from torch.nn.attention.flex_attention import BlockMask
    R, T = regions, region_tokens
    N = R * T
    nb = -(-N // block_size)
    device = idx.device
    routed = _routed_mask(idx, R)
    # tokens of region r inside block i: overlap [nb, R]
    starts = torch.arange(nb, device=device) * block_size
    r0 = torch.arange(R, device=device) * T
    overlap = ((torch.minimum(starts[:, None] + block_size, r0[None] + T) - torch.maximum(starts[:, None], r0[None]))
               .clamp(min=0).to(torch.float64))
    routed_pairs = overlap @ routed.to(torch.float64) @ overlap.T  # [B, nb, nb] routed token pairs per block pair
    block_tokens = overlap.sum(1)
    full = routed_pairs == block_tokens[:, None] * block_tokens[None, :]
    partial = (routed_pairs > 0) & ~full

    def to_indices(adj):  # [B, nb, nb] bool -> counts [B, 1, nb], indices [B, 1, nb, nb] (present blocks first)
        counts = adj.sum(-1, dtype=torch.int32)
        order = torch.argsort((~adj).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[:, None], order[:, None]

    kv_num, kv_idx = to_indices(partial)
    full_num, full_idx = to_indices(full)

    def mask_mod(b, h, q_idx, kv_idx_):
        qr = torch.clamp(q_idx // T, max=R - 1)
        kr = torch.clamp(kv_idx_ // T, max=R - 1)
        return routed[b, qr, kr]

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=mask_mod,
                                    seq_lengths=(N, N))


def _routing_flex(q, k, v, idx, sh, sw, scale, compiled: bool = True):
    B, H, W, h, Dk = q.shape
    Dv = v.shape[-1]
    R, T = sh * sw, (H // sh) * (W // sw)

    def heads_first(x):  # [B, R, T, h, D] -> [B, h, R*T, D]
        return x.reshape(B, R * T, h, x.shape[-1]).transpose(1, 2)

    q_reg, k_reg, v_reg = (_to_regions(t, sh, sw) for t in (q, k, v))
    bad = nonfinite_keys(k_reg, v_reg)  # [B, R, T, h] or None (module docstring: non-finite keys)
    if bad is not None:
        k_reg, v_reg = zero_keys(k_reg, bad), zero_keys(v_reg, bad)
    block_mask = flex_routing_block_mask(idx, R, T)
    if compiled:
        fn = _compiled_flex_attention()
    else:
        from torch.nn.attention.flex_attention import flex_attention as fn
    out = fn(heads_first(q_reg), heads_first(k_reg), heads_first(v_reg), block_mask=block_mask, scale=scale)
    out = out.transpose(1, 2).reshape(B, R, T, h, Dv)
    if bad is not None:
        out = poison(out, _regions_attending(bad, _routed_mask(idx, R)))
    return _from_regions(out, sh, sw, H, W)


# ---------------------------------------------------------------------------------------------
# triton backend: attnzoo's fused kernels (``_routing_triton.py``); a torch.library custom op under torch.compile
# ---------------------------------------------------------------------------------------------

def _triton_unsupported(q: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    """Why the fused Triton kernels cannot run these inputs, or None when they can."""
    if max(q.shape[-1], v.shape[-1]) > _TRITON_MAX_HEAD_DIM:
        return f'head_dim {q.shape[-1]} (v: {v.shape[-1]}); they take head dims up to {_TRITON_MAX_HEAD_DIM}'
    if q.dtype not in TRITON_DTYPES:
        return f'dtype {q.dtype} (one of {TRITON_DTYPES} is needed)'
    if not (q.is_cuda or _triton_interpreted()):
        return f'tensors on {q.device} (the kernels need CUDA)'
    return None


@torch.library.custom_op('attnzoo::routing_fused', mutates_args=())
def _routing_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, sh: int, sw: int,
                   scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused routing attention: q, k ``[B, H, W, heads, Dk]``, v ``[B, H, W, heads, Dv]``, routing ``[B, R, topk]``
    -> (out ``[B, H, W, heads, Dv]``, log2-sum-exp ``[B, H, W, heads]`` fp32)."""
    from . import _routing_triton  # imports Triton: only when the kernels run (never while torch.compile traces)
    return _routing_triton.routing_forward(q, k, v, idx, sh, sw, scale)


@_routing_fused.register_fake
def _routing_fused_fake(q, k, v, idx, sh, sw, scale):
    return torch.empty(v.shape, dtype=v.dtype, device=v.device), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op('attnzoo::routing_fused_backward', mutates_args=())
def _routing_fused_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            out: torch.Tensor, lse: torch.Tensor, idx: torch.Tensor, sh: int, sw: int,
                            scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`_routing_fused`."""
    from . import _routing_triton
    return _routing_triton.routing_backward(grad_out, q, k, v, out, lse, idx, sh, sw, scale)


@_routing_fused_backward.register_fake
def _routing_fused_backward_fake(grad_out, q, k, v, out, lse, idx, sh, sw, scale):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))


def _routing_fused_setup(ctx, inputs, output):
    q, k, v, idx, sh, sw, scale = inputs
    ctx.save_for_backward(q, k, v, idx, *output)
    ctx.params = (sh, sw, scale)


def _routing_fused_bwd(ctx, grad_out, grad_lse):
    q, k, v, idx, out, lse = ctx.saved_tensors
    dq, dk, dv = _routing_fused_backward(grad_out, q, k, v, out, lse, idx, *ctx.params)
    return dq, dk, dv, None, None, None, None


_routing_fused.register_autograd(_routing_fused_bwd, setup_context=_routing_fused_setup)


class _RoutingFusedFunction(torch.autograd.Function):
    """Eager autograd of the same kernels as the custom op above, without the custom op's dispatch (host time,
    as for ``neighborhood._NA2dFusedFunction``). ``torch.compile`` traces the custom op instead."""

    @staticmethod
    def forward(ctx, q, k, v, idx, sh, sw, scale):
        from . import _routing_triton
        out, lse = _routing_triton.routing_forward(q, k, v, idx, sh, sw, scale)
        ctx.save_for_backward(q, k, v, idx, out, lse)
        ctx.params = (sh, sw, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from . import _routing_triton
        q, k, v, idx, out, lse = ctx.saved_tensors
        dq, dk, dv = _routing_triton.routing_backward(grad_out, q, k, v, out, lse, idx, *ctx.params)
        return dq, dk, dv, None, None, None, None


def _routing_kernels(q, k, v, idx, sh, sw, scale):
    if torch.compiler.is_compiling():
        out, _ = _routing_fused(q, k, v, idx, sh, sw, float(scale))
        return out
    return _RoutingFusedFunction.apply(q, k, v, idx, sh, sw, float(scale))


# ---------------------------------------------------------------------------------------------
# Public functional API
# ---------------------------------------------------------------------------------------------

def _auto_supports(backend: str, q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether ``backend`` (an entry of ``_AUTO_CUDA_ORDER``) can run these CUDA inputs."""
    if backend == 'triton':
        return triton_available() and _triton_unsupported(q, v) is None
    if backend == 'flex':
        return flex_available()
    return True


def _builds_graph(*tensors: torch.Tensor) -> bool:
    """Whether a call on ``tensors`` records an autograd graph (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _auto_cuda_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The first backend of ``_AUTO_CUDA_ORDER`` (its training order when the call builds an autograd graph, else
    its inference order) that supports these inputs."""
    for backend in _AUTO_CUDA_ORDER['training' if _builds_graph(q, k, v) else 'inference']:
        if _auto_supports(backend, q, v):
            return backend
    return 'torch'


def _auto_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """``_auto_cuda_backend`` on CUDA; on the CPU 'torch' (measured fastest, benchmarks/README.md)."""
    return _auto_cuda_backend(q, k, v) if q.is_cuda and not exporting() else 'torch'


def _select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, op: str) -> str:
    requested = get_backend()
    if requested == 'auto':
        return _auto_backend(q, k, v)
    if requested == 'flex':
        check_flex_device(op, q)
    if requested == 'triton':
        if not triton_available():
            raise RuntimeError(f"{op}: backend 'triton' needs Triton and a CUDA device")
        reason = _triton_unsupported(q, v)
        if reason is not None:
            raise ValueError(f"{op}: backend 'triton' does not support {reason}; use 'torch' or 'auto'")
    if requested == 'natten':
        raise ValueError(f"{op}: backend 'natten' has no routing attention; "
                         "use 'reference', 'torch', 'flex', 'triton' or 'auto'")
    return requested


def routing_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_regions: IntOrPair, topk: int,
                      scale: Optional[float] = None, return_indices: bool = False,
                      routing: Optional[torch.Tensor] = None, routing_scale: Optional[float] = None,
                      check_routing: bool = True) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Bi-level routing attention (BiFormer, official legacy semantics; see the module docstring).

    Args:
        q, k: ``[B, H, W, heads, head_dim]``; v: ``[B, H, W, heads, head_dim_v]``. H and W must be divisible by
            ``num_regions`` (pad first: BiFormer pads its layer input, not q/k/v).
        num_regions: regions per side, int or ``(Sh, Sw)`` (the official ``n_win``); ``R = Sh * Sw``.
        topk: routed key regions per query region, ``1 <= topk <= R``.
        scale: logit scale of both the routing and the token attention; default ``(heads * head_dim) ** -0.5``
            (BiFormer's, full channel count).
        routing: optional precomputed routing ``[B, R, topk]`` (int64 key-region indices) used instead of the
            region-mean routing (e.g. BiFormer-nchw routes on the means of the unpadded tokens).
        routing_scale: scale of the routing logits (default ``scale``; the refactored nchw BiFormer uses 1).
        check_routing: check that every entry of ``routing`` lies in ``[0, R)`` and that no row repeats one (one
            device sync per call; skipped under ``torch.compile``). Callers whose routing comes from ``topk`` over
            the ``R`` regions pass False.
        return_indices: also return the routing ``[B, R, topk]`` (int64, region indices row-major; for
            ``topk == R`` the routing is not computed and ``arange(R)`` is returned).

    Returns:
        ``[B, H, W, heads, head_dim_v]``, or ``(output, indices)``.

    MACs reported to ``attnzoo.ops.count_attention_macs`` are what fvcore counts on the official code: the
    routing product ``B*R*R*heads*head_dim`` (when ``topk < R``) and the token attention
    ``B*H*W*topk*T*heads*(head_dim + head_dim_v)`` with ``T = H*W/R`` tokens per region.
    """
    op = 'routing_attention'
    sh, sw = _check_inputs(q, k, v, num_regions, topk, op)
    check_scale(op, 'scale', scale)
    check_scale(op, 'routing_scale', routing_scale)
    B, H, W, h, Dk = q.shape
    R, T = sh * sw, (H // sh) * (W // sw)
    if routing is not None:
        _check_routing(routing, q, (B, R, topk), check_routing, op)
    if scale is None:
        scale = (h * Dk) ** -0.5
    add_attention_macs(B * H * W * topk * T * h * (Dk + v.shape[-1]) + (B * R * R * h * Dk if topk < R else 0))
    backend = _select_backend(q, k, v, op)
    if routing is not None:
        if backend == 'reference':
            out = _routing_reference(q, k, v, routing, sh, sw, scale)
        elif topk == R:
            out = _full_attention(q, k, v, scale)
        else:
            fn = {'torch': _routing_torch, 'flex': _routing_flex, 'triton': _routing_kernels}[backend]
            out = fn(q, k, v, routing, sh, sw, scale)
        return (out, routing) if return_indices else out
    if topk == R:  # every region: plain global attention, no routing needed
        idx = torch.arange(R, device=q.device).expand(B, R, R)
        out = _routing_reference(q, k, v, idx, sh, sw, scale) if backend == 'reference' \
            else _full_attention(q, k, v, scale)
    else:
        idx = _route(q, k, sh, sw, topk, scale if routing_scale is None else routing_scale)
        fn = {'reference': _routing_reference, 'torch': _routing_torch, 'flex': _routing_flex,
              'triton': _routing_kernels}[backend]
        out = fn(q, k, v, idx, sh, sw, scale)
    return (out, idx) if return_indices else out
