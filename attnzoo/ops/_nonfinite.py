"""Non-finite keys and values: one rule for every backend of an op.

A key whose ``k`` or ``v`` vector holds a NaN or an infinity makes the whole output of every query that attends
to it NaN; queries that do not attend to it are unaffected (a non-finite ``q`` reaches only its own output).

Tiled and fused attention cannot give that by itself: the queries of a tile share its keys, a window or a
connectivity applied as an additive ``-inf`` turns a NaN logit into NaN (``NaN + -inf``), and masked pairs still
multiply their value by a zero weight (``0 * NaN``), so one bad key spreads to every query of the tiles that load
it. The ops therefore zero the bad keys before attending (``zero_keys``) and set the outputs of the queries that
attend to one of them to NaN afterwards (``poison``).
"""
from typing import Optional

import torch

from ._dispatch import tensors_are_traced

__all__ = ['nonfinite_keys', 'zero_keys', 'poison']


def nonfinite_keys(k: torch.Tensor, v: torch.Tensor) -> Optional[torch.Tensor]:
    """Bool ``k.shape[:-1]``: the keys whose ``k`` or ``v`` vector (the last dim) holds a NaN or an infinity.

    ``k`` and ``v`` share every dim but the last. Returns None when there is no bad key and finding out costs no
    device sync (CPU tensors, eager), so that the ops skip the masking; on CUDA, under ``torch.compile``,
    ``torch.export`` or fake tensors the mask is returned as it is (the masking is a few elementwise ops); under
    ``torch.jit.trace`` (FLOP counting) None, so that the trace holds only the attention itself.
    """
    if torch.jit.is_tracing():
        return None
    # A non-finite element makes the sum non-finite; an overflow of finite ones only costs the exact mask below.
    if k.device.type == 'cpu' and not tensors_are_traced(k.device) and bool(torch.isfinite(k.sum() + v.sum())):
        return None
    return ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))


def zero_keys(t: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``t`` (``[..., D]``) with the vectors of the keys ``bad`` (``[...]``) set to 0."""
    return t.masked_fill(bad.unsqueeze(-1), 0)


def poison(out: torch.Tensor, attends: torch.Tensor) -> torch.Tensor:
    """``out`` (``[..., Dv]``) with the outputs of the queries ``attends`` (``[...]``) set to NaN."""
    return out.masked_fill(attends.unsqueeze(-1), float('nan'))
