"""Parameter and MAC counting in the convention of the papers' tables.

The papers count MACs with fvcore (``FlopCountAnalysis``: one multiply-add is one "flop") plus the nominal MACs of
the attention (``B*heads*N*K^2*(Dqk+Dv)`` for neighborhood attention). ``count_macs`` gives the same totals
without fvcore: one eager forward under ``FvcoreMacMode``, a ``TorchFunctionMode`` that applies fvcore's default
op table (its formulas, for the same ops), plus what the attention ops report to
``attnzoo.ops.count_attention_macs``.

Why a hand-written table instead of ``torch.utils.flop_counter.FlopCounterMode``: that counter works at the
dispatcher level, after composite ops are decomposed, so it counts SDPA (which the ops already report), does not
count normalization or pooling, and sees ``linear`` as ``addmm``: its totals differ from the published ones.
fvcore traces the model with ``torch.jit.trace``, which records ops at the level of the torch functions the model
calls; a ``TorchFunctionMode`` sees exactly those calls, so the same formulas give the same totals (checked equal
to fvcore 0.1.5 on every registered attnzoo model that fvcore could trace) in about a twentieth of the time, and
without ``torch.jit``. Ops fvcore does not count (SDPA, elementwise ops, reductions) are not counted here either.
"""
import math
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from attnzoo.ops import count_attention_macs

__all__ = ['count_macs', 'count_params', 'layer_macs', 'FvcoreMacMode']

_Rule = Callable[[Tuple[Any, ...], Dict[str, Any], Any], float]


def count_params(model: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in model.parameters())


def _numel(t: Any) -> int:
    return math.prod(t.shape) if isinstance(t, torch.Tensor) else 0


def _arg(args: Tuple[Any, ...], kwargs: Dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of a call, given by position or by ``name``."""
    return args[index] if len(args) > index else kwargs.get(name, default)


# fvcore's formulas (fvcore/nn/jit_handles.py), one per op of its default table.

def _linear(args, kwargs, out) -> float:
    """``[..., C_in] x [C_out, C_in]``: input elements times ``C_out``."""
    return _numel(args[0]) * _arg(args, kwargs, 1, 'weight').shape[0]


def _matmul(args, kwargs, out) -> float:
    """``[..., n, k] @ [..., k, m]``: first operand's elements times ``m`` (fvcore's matmul and mm)."""
    return _numel(args[0]) * args[1].shape[-1]


def _bmm(args, kwargs, out) -> float:
    n, c, t = args[0].shape
    return n * c * t * args[1].shape[-1]


def _addmm(args, kwargs, out) -> float:
    n, c = args[1].shape
    return n * c * args[2].shape[-1]


def _einsum(args, kwargs, out) -> float:
    """fvcore's einsum: two special-cased equations, else numpy's optimal contraction path, halved."""
    operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    shapes = [tuple(o.shape) for o in operands]
    equation = args[0].replace(' ', '')
    letters = OrderedDict((c, 0) for c in equation if c.isalpha()).keys()
    equation = equation.translate({ord(x): 97 + i for i, x in enumerate(letters)})
    if equation == 'abc,abd->acd':
        n, c, t = shapes[0]
        return n * c * t * shapes[-1][-1]
    if equation == 'abc,adc->adb':
        n, t, g = shapes[0]
        return n * t * g * shapes[-1][1]
    report = np.einsum_path(equation, *[np.zeros(s) for s in shapes], optimize='optimal')[1]
    line = next(line for line in report.split('\n') if 'optimized flop' in line.lower())
    return float(np.floor(float(line.split(':')[-1]) / 2))


def _conv(transposed: bool) -> _Rule:
    """Batch x filter elements x output positions (input positions when transposed); bias not counted."""
    def rule(args, kwargs, out) -> float:
        x, w = args[0], _arg(args, kwargs, 1, 'weight')
        return x.shape[0] * math.prod(w.shape) * math.prod((x if transposed else out).shape[2:])
    return rule


def _convolution(args, kwargs, out) -> float:
    """``torch.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)``."""
    return _conv(bool(args[6]))(args, kwargs, out)


def _norm(weight_index: int) -> _Rule:
    """Layer / group / instance norm: 5 per element with an affine weight, else 4."""
    def rule(args, kwargs, out) -> float:
        return _numel(args[0]) * (5 if _arg(args, kwargs, weight_index, 'weight') is not None else 4)
    return rule


def _batch_norm(weight_index: int) -> _Rule:
    """Batch norm: as ``_norm`` in training; in eval 2 per element with an affine weight, else 1."""
    def rule(args, kwargs, out) -> float:
        affine = _arg(args, kwargs, weight_index, 'weight') is not None
        if _arg(args, kwargs, 5, 'training', False):
            return _numel(args[0]) * (5 if affine else 4)
        return _numel(args[0]) * (2 if affine else 1)
    return rule


def _interpolate(args, kwargs, out) -> float:
    """2-D nearest (1 per output element) and bilinear (4) upsampling; other modes are not counted."""
    if out.ndim != 4:
        return 0
    return _numel(out) * {'nearest': 1, 'bilinear': 4}.get(_arg(args, kwargs, 3, 'mode', 'nearest'), 0)


_RULES: Dict[Callable, _Rule] = {
    F.linear: _linear,
    torch.matmul: _matmul, torch.Tensor.matmul: _matmul, torch.Tensor.__matmul__: _matmul,
    torch.mm: _matmul, torch.Tensor.mm: _matmul,
    torch.bmm: _bmm, torch.Tensor.bmm: _bmm,
    torch.addmm: _addmm, torch.Tensor.addmm: _addmm,
    torch.einsum: _einsum,
    F.conv1d: _conv(False), F.conv2d: _conv(False), F.conv3d: _conv(False),
    F.conv_transpose1d: _conv(True), F.conv_transpose2d: _conv(True), F.conv_transpose3d: _conv(True),
    torch.convolution: _convolution,
    F.layer_norm: _norm(2), torch.layer_norm: _norm(2),
    F.group_norm: _norm(2), torch.group_norm: _norm(2),
    F.instance_norm: _norm(3), torch.instance_norm: _norm(1),
    F.batch_norm: _batch_norm(3), torch.batch_norm: _batch_norm(1),
    F.interpolate: _interpolate,
    F.adaptive_avg_pool2d: lambda args, kwargs, out: _numel(args[0]),
    F.grid_sample: lambda args, kwargs, out: _numel(out) * 4,
}


class FvcoreMacMode(TorchFunctionMode):
    """Counts, while active, the MACs of the torch calls in fvcore's op table (``macs``; ``by_op``: per function
    name). A call is counted once: torch disables the mode while a call it intercepted runs."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.by_op: Dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = _RULES.get(func)
        if rule is not None:
            macs = int(rule(args, kwargs, out))
            self.macs += macs
            name = getattr(func, '__name__', str(func))
            self.by_op[name] = self.by_op.get(name, 0) + macs
        return out


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


def layer_macs(model: nn.Module, inputs: Union[Sequence[int], torch.Tensor]) -> int:
    """The fvcore-table part of ``count_macs`` alone (no attention-op term)."""
    x = _example_input(model, inputs)
    with torch.no_grad(), count_attention_macs(), FvcoreMacMode() as mode:
        model(x)
    return mode.macs


@torch.no_grad()
def count_macs(model: nn.Module, inputs: Union[Sequence[int], torch.Tensor],
               by_op: Optional[Dict[str, int]] = None) -> int:
    """MACs of one forward pass: fvcore's op table plus the nominal MACs of the attention ops.

    Args:
        model: The model; it is run in its current mode, on its own device and dtype.
        inputs: An input tensor, or its shape ``(C, H, W)`` (batch 1) / ``(B, C, H, W)`` (zeros are used).
        by_op: If given, filled with the MACs per counted function name, plus ``'attention'``.

    Returns:
        Total multiply-accumulates for the whole batch.
    """
    x = _example_input(model, inputs)
    with count_attention_macs() as counter, FvcoreMacMode() as mode:
        model(x)
    if by_op is not None:
        by_op.update(mode.by_op, attention=counter.macs)
    return mode.macs + counter.macs
