"""The one checkpoint loader of the package: tensors-only unpickling unless the caller trusts the file.

Unpickling a file can run any code the file names, so :func:`load_checkpoint` reads torch files with
``torch.load(weights_only=True)`` and an allow-list of the few non-tensor types that the checkpoints we read
need:

* official releases and training scripts (DeiT / ConvNeXt / timm style) store ``argparse.Namespace`` under
  ``'args'`` and numpy scalars (e.g. a best accuracy);
* mmengine Runner checkpoints (``tools/train.py``) pickle the message hub: ``HistoryBuffer`` objects holding
  numpy arrays, whose ``statistics_methods`` refer to ``HistoryBuffer.min`` etc. through ``getattr``. Only
  those attributes are resolved (:func:`_history_buffer_getattr`); ``getattr`` itself stays forbidden.

Anything else needs ``trusted=True`` (``--trust-checkpoint`` in the tools): full unpickling, for files you
trust. A file that cannot be read raises :class:`CheckpointError` saying what it is.
"""
import argparse
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ['CheckpointError', 'load_checkpoint', 'load_state_dict_strict', 'TRUST_HINT']

TRUST_HINT = ('if you trust the file, pass --trust-checkpoint (tools) or trusted=True (API: load_checkpoint(path, '
              'trusted=True); for timm.create_model pass its result as pretrained_cfg_overlay=dict(state_dict=...))')
_ZIP_MAGIC = b'PK'
_LISTED = 20  # keys listed per kind in a mismatch error
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol >= 2 (torch's legacy, non-zip format)
# torch's refusals: 'Unsupported global: GLOBAL x.y was not ...', 'unsupported GLOBAL x.y whose module ...'
_UNSAFE_GLOBAL = re.compile(r'GLOBAL (\S+)')
_TORCH_ADVICE = ('Weights only load failed', 'Check the documentation of torch.load')

MapLocation = Union[str, torch.device, Callable, Dict[str, str], None]


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint: not one at all, truncated/corrupt, or needing full unpickling."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's pickled ``HistoryBuffer.statistics_methods`` uses it, and nothing else: only the
    registered statistics methods of ``HistoryBuffer`` (``min``, ``max``, ``current``, ``mean``, ...)."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer()  # registers the default statistics methods in the class's table
    method = HistoryBuffer._statistics_methods.get(name) if obj is HistoryBuffer else None
    if method is None or getattr(HistoryBuffer, name, None) is not method:
        raise CheckpointError(f'the checkpoint asks for getattr({obj!r}, {name!r}); without trust only the '
                              f'statistics methods of HistoryBuffer are allowed; {TRUST_HINT}')
    return method


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """numpy arrays, scalars and dtypes, under numpy 2's module names and numpy 1's (``numpy.core``)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'}
    out: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        out += [(multiarray._reconstruct, f'{module}._reconstruct'), (multiarray.scalar, f'{module}.scalar')]
    return out


def _mmengine_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """mmengine's message hub (``HistoryBuffer`` and its statistics ``getattr``), where mmengine is installed."""
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:  # mmengine is an optional dependency (the `train` extra); no Runner checkpoints then
        return []
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]


def safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The allow-list for ``torch.load(weights_only=True)``: argparse.Namespace, numpy, mmengine's HistoryBuffer."""
    return [argparse.Namespace, *_numpy_globals(), *_mmengine_globals()]


def _describe(path: str) -> str:
    """What the bytes at ``path`` look like, for error messages."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(16)
    return f'{size} bytes, starting {head!r}'


def _torch_load(path: str, map_location: MapLocation, trusted: bool) -> Any:
    """``torch.load`` with the allow-list (or fully unpickling if ``trusted``); torch's errors become ours."""
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f'{path!r} is empty (0 bytes), not a checkpoint')
    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTO:
        raise CheckpointError(f'{path!r} is not a checkpoint (neither a torch zip/pickle file nor .safetensors; '
                              f'{_describe(path)})')
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        raise CheckpointError(f'{path!r} is a truncated or corrupt zip archive (no central directory; a partly '
                              f'written file?), {_describe(path)}')
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError as err:
        raise CheckpointError(f'{path!r}: {err}') from err
    except Exception as err:  # torch / pickle / zip raise many types for one bad file
        raise _classify(path, err, trusted) from err


def _torch_reason(err: Exception) -> str:
    """The cause inside torch's error, without its "retry with weights_only=False" advice."""
    causes = [p.strip() for p in str(err).split('\n\n') if p.strip() and not p.strip().startswith(_TORCH_ADVICE)]
    return causes[0].splitlines()[0] if causes else type(err).__name__


def _classify(path: str, err: Exception, trusted: bool) -> CheckpointError:
    """The error for a torch file that ``torch.load`` could not read: needs trust, or corrupt."""
    reason = _torch_reason(err)
    found = _UNSAFE_GLOBAL.search(reason)
    if not trusted and isinstance(err, pickle.UnpicklingError) and found:
        return CheckpointError(f'{path!r} needs full unpickling, which can run code: it contains the global '
                               f'{found.group(1)}, which is not on the allow-list; {TRUST_HINT}')
    if not trusted and isinstance(err, pickle.UnpicklingError):
        return CheckpointError(f'{path!r} holds objects that tensors-only loading refuses ({reason}); {TRUST_HINT}')
    return CheckpointError(f'{path!r} is a corrupt or truncated checkpoint ({type(err).__name__}: {reason}), '
                           f'{_describe(path)}')


def _safetensors_load(path: str, map_location: MapLocation) -> Dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a state dict, on ``map_location`` (a device or its name; default CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise TypeError(f'map_location for a .safetensors file must be a device or its name, got {map_location!r}')
    try:
        return load_file(path, device=str(map_location or 'cpu'))
    except SafetensorError as err:
        raise CheckpointError(f'{path!r} is not a readable .safetensors file ({err}), {_describe(path)}') from err


def load_checkpoint(path: Union[str, os.PathLike], map_location: MapLocation = 'cpu', trusted: bool = False) -> Any:
    """Read a checkpoint file: ``.safetensors`` through safetensors, anything else through ``torch.load``.

    Args:
        path: the file.
        map_location: as for ``torch.load`` (for ``.safetensors``: a device or its name).
        trusted: fully unpickle (``weights_only=False``), which runs whatever code the file names. Without it
            only tensors, containers, numbers, strings and :func:`safe_globals` are accepted.

    Returns:
        What the file holds: usually a dict (a state dict of tensors, or a wrapper such as ``{'model': ...}``,
        ``{'state_dict': ..., 'message_hub': ...}``).

    Raises:
        FileNotFoundError: naming ``path``, when there is no such file.
        TypeError: ``trusted`` not a bool.
        CheckpointError: (a ValueError) the file is not a checkpoint, is truncated or corrupt, or needs
            ``trusted=True``; the message says which.
    """
    if not isinstance(trusted, bool):
        raise TypeError(f'trusted must be a bool, got {trusted!r}')
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist')
    if path.endswith('.safetensors'):
        return _safetensors_load(path, map_location)
    return _torch_load(path, map_location, trusted)


def _listing(kind: str, keys: List[str]) -> str:
    more = f' and {len(keys) - _LISTED} more' if len(keys) > _LISTED else ''
    return f'\n  {len(keys)} {kind}: {keys[:_LISTED]}{more}' if keys else ''


def load_state_dict_strict(module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str,
                           replaceable: Sequence[str] = ()) -> None:
    """Load ``state_dict`` into ``module`` only if it fits: a missing, unexpected or size-mismatched key is an
    error listing them (the module is left unchanged). ``num_batches_tracked`` buffers may be missing, as
    mmengine allows.

    Args:
        module: the network (or task model) to load into.
        state_dict: its weights, already in ``module``'s key layout.
        source: what the weights are (a path), named in the error.
        replaceable: key prefixes (e.g. the classifier ``'head.fc'``) whose entries may be missing or of another
            size: they keep ``module``'s values. For fine-tuning with another head; empty for evaluation.

    Raises:
        CheckpointError: listing the missing, unexpected and size-mismatched keys.
    """
    expected = module.state_dict()

    def is_replaceable(key: str) -> bool:
        return any(key == p or key.startswith(p + '.') for p in replaceable)

    def fits(key: str) -> bool:
        return tuple(state_dict[key].shape) == tuple(expected[key].shape)

    state = {k: v for k, v in state_dict.items() if not (k in expected and is_replaceable(k) and not fits(k))}
    missing = [k for k in expected if k not in state and not is_replaceable(k) and
               not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    resized = [f'{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model'
               for k, v in state.items() if k in expected and not fits(k)]
    if missing or unexpected or resized:
        raise CheckpointError(f'{source} does not fit {type(module).__name__}:'
                              f'{_listing("missing key(s)", missing)}{_listing("unexpected key(s)", unexpected)}'
                              f'{_listing("key(s) of another size", resized)}')
    module.load_state_dict(state, strict=False)
