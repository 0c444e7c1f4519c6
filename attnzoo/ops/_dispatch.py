"""Backend selection and op accounting shared by every attention op.

Models call the public ops (``attnzoo.ops.na2d``, ...); each op picks one of the backends below.
``auto`` (the default) lets the op pick the fastest backend that supports its arguments;
``use_backend(name)`` forces one for the code inside the ``with`` block. While ``torch.export`` traces a model
(:func:`exporting`), ``auto`` is ``torch``.

Backends:
    reference  dense masked attention, O(N^2) memory: the readable definition, used by tests.
    torch      pure PyTorch, memory O(N*k^2), autograd everywhere: the CPU default.
    flex       ``torch.nn.attention.flex_attention`` with block masks, compiled: CUDA only.
    natten     NATTEN's fused kernels, when its compiled library is present (no RPB).
    triton     attnzoo's fused Triton kernels (2-D neighborhood attention with dilation and RPB; bi-level
               routing attention): CUDA.
"""
import contextlib
from typing import Iterator, Optional

import torch

__all__ = ['BACKENDS', 'use_backend', 'get_backend', 'exporting', 'flex_available', 'count_attention_macs',
           'counting_macs', 'add_attention_macs']

BACKENDS = ('auto', 'reference', 'torch', 'flex', 'natten', 'triton')

# Plain module state (not contextvars) so torch.compile can guard on it without graph breaks.
_STATE = {'backend': 'auto', 'counter': None}


def check_backend_name(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise a ValueError listing the valid ones."""
    if name not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {name!r}')
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force every attnzoo attention op inside the ``with`` block to use backend ``name``.

    Example::

        with attnzoo.ops.use_backend('reference'):
            out = model(x)
    """
    previous = _STATE['backend']
    _STATE['backend'] = check_backend_name(name)
    try:
        yield
    finally:
        _STATE['backend'] = previous


def get_backend() -> str:
    """The backend requested by the innermost ``use_backend`` block (``'auto'`` outside any)."""
    return _STATE['backend']


def exporting() -> bool:
    """Whether ``torch.export`` (also under ``torch.onnx.export(dynamo=True)``) is tracing the model: ``auto`` then
    picks each op's pure-PyTorch path (SDPA, gathers, convolutions), which every exporter and runtime can run,
    never the Triton, flex or NATTEN kernels, and its choice depends on no tensor value."""
    return torch.compiler.is_exporting()


def tensors_are_traced(device: torch.device) -> bool:
    """Whether tensors made now are not real data that later calls may reuse: under torch.compile or
    torch.export (fake tensors), under another fake-tensor tracer (make_fx), or on a CUDA stream that is
    capturing a graph (whose kernels run only when the graph is replayed)."""
    return (torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None
            or (device.type == 'cuda' and torch.cuda.is_current_stream_capturing()))


def flex_available() -> bool:
    """Whether ``torch.nn.attention.flex_attention`` exists and a CUDA device is present."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class MacCounter:
    """Accumulates the nominal multiply-accumulates of the attention ops run while it is active."""

    def __init__(self) -> None:
        self.macs = 0

    def add(self, macs: int) -> None:
        self.macs += int(macs)


@contextlib.contextmanager
def count_attention_macs() -> Iterator[MacCounter]:
    """Count the nominal MACs of every attention op called inside the block.

    FLOP counters such as fvcore do not see inside fused attention (SDPA, flex, NATTEN); each op
    reports what the paper counts instead (for neighborhood attention ``B*heads*N*k^2*(Dqk+Dv)``).
    """
    previous = _STATE['counter']
    counter = MacCounter()
    _STATE['counter'] = counter
    try:
        yield counter
    finally:
        _STATE['counter'] = previous


def counting_macs() -> bool:
    """Whether a ``count_attention_macs`` block is active (ops then keep their own internal products, such as
    BiFormer's region logits, out of the layer-level MAC count, since they report them themselves)."""
    return _STATE['counter'] is not None


def add_attention_macs(macs: int) -> None:
    """Called by the ops: add ``macs`` to the active counter, if any."""
    counter: Optional[MacCounter] = _STATE['counter']
    if counter is not None:
        counter.add(macs)
