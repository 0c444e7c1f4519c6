"""Parameter and MAC counting in the convention of the papers' tables.

MACs are fvcore's ``FlopCountAnalysis`` total (fvcore counts one multiply-add as one "flop") plus the nominal MACs
of every attention op from ``attnzoo.ops.count_attention_macs`` (``B*heads*N*K^2*(Dqk+Dv)`` for neighborhood
attention), collected during the single forward pass that fvcore traces. fvcore does not count inside the
attention ops (SDPA and the gathers are not in its op table), so nothing is counted twice.
"""
import logging
from typing import Sequence, Union

import torch
import torch.nn as nn

from attnzoo.ops import count_attention_macs

__all__ = ['count_macs', 'count_params']


def count_params(model: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in model.parameters())


def _example_input(model: nn.Module, inputs: Union[Sequence[int], torch.Tensor]) -> torch.Tensor:
    """``inputs`` itself, or zeros of shape ``inputs`` (``(C, H, W)`` gets batch 1) on the model's device/dtype."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    shape = tuple(int(s) for s in inputs)
    if len(shape) not in (3, 4):
        raise ValueError(f'inputs: expected a tensor or a shape (C, H, W) or (B, C, H, W), got {shape}')
    if len(shape) == 3:
        shape = (1,) + shape
    param = next(model.parameters())
    return torch.zeros(shape, device=param.device, dtype=param.dtype)


def _fvcore_macs(model: nn.Module, x: torch.Tensor) -> int:
    """fvcore's total for one traced forward of ``model(x)``, with its per-op warnings silenced."""
    from fvcore.nn import FlopCountAnalysis
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    fvcore_logger = logging.getLogger('fvcore')
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        return int(analysis.total())
    finally:
        fvcore_logger.setLevel(level)


@torch.no_grad()
def count_macs(model: nn.Module, inputs: Union[Sequence[int], torch.Tensor]) -> int:
    """MACs of one forward pass: fvcore's count plus the nominal MACs of the attention ops.

    Args:
        model: The model; it is run in its current mode, on its own device and dtype.
        inputs: An input tensor, or its shape ``(C, H, W)`` (batch 1) / ``(B, C, H, W)`` (zeros are used).

    Returns:
        Total multiply-accumulates for the whole batch.
    """
    x = _example_input(model, inputs)
    with count_attention_macs() as counter:
        macs = _fvcore_macs(model, x)
    return macs + counter.macs
