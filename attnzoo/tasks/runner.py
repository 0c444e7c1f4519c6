"""mmengine's Runner with strict checkpoint loading, and attnzoo's loader as mmengine's reader of local files.

mmengine loads ``load_from`` and ``--resume`` files with ``strict=False``: a checkpoint of another width,
class count or model only logs size-mismatch warnings, and the run goes on (an evaluation then reports
chance-level accuracy with exit code 0). :class:`StrictRunner` makes a key that does not fit an error that
lists them, on every rank. Fine-tuning from a checkpoint with another classifier is the explicit config
switch ``load_from_finetune=True``.
"""
import re
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from ..utils.checkpoint import load_checkpoint, load_state_dict_strict

__all__ = ['StrictRunner', 'as_task_checkpoint', 'classifier_prefixes', 'register_checkpoint_loader']


def register_checkpoint_loader(trusted: bool = False) -> None:
    """Make :func:`attnzoo.utils.checkpoint.load_checkpoint` mmengine's reader of local files (``load_from``,
    ``resume``, ``init_cfg``): tensors only plus the types mmengine's own checkpoints need; ``trusted=True``
    (the tools' ``--trust-checkpoint``) unpickles fully, for files you trust. Importing :mod:`attnzoo.tasks`
    registers the untrusted reader."""
    if not isinstance(trusted, bool):
        raise TypeError(f'trusted must be a bool, got {trusted!r}')

    def load_local(filename: str, map_location: Union[str, Callable, None]) -> Any:
        return load_checkpoint(filename, map_location=map_location, trusted=trusted)

    CheckpointLoader.register_scheme(prefixes='', loader=load_local, force=True)


def as_task_checkpoint(model: nn.Module, checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """``checkpoint`` in the layout of a Runner checkpoint of ``model`` (a task model): a bare state dict of its
    timm network ``model.model`` (``tools/publish.py``'s ``.safetensors`` / ``.pth``, a converted release) becomes
    ``{'state_dict': {'model.<key>': ...}}``, so that ``load_from`` takes it as it takes a training checkpoint
    (and EMAHook finds its ``state_dict``); anything else is returned as it is."""
    network = getattr(model, 'model', None)
    bare = isinstance(checkpoint, dict) and all(isinstance(value, torch.Tensor) for value in checkpoint.values())
    if not bare or not isinstance(network, nn.Module) or set(checkpoint) & set(model.state_dict()):
        return checkpoint
    return {'state_dict': {f'model.{key}': value for key, value in checkpoint.items()}}


def classifier_prefixes(model: nn.Module) -> List[str]:
    """The state-dict prefixes of the classifier heads in ``model``: for every timm network inside it, its
    ``pretrained_cfg['classifier']`` under the network's name (e.g. ``'model.head.fc'``)."""
    prefixes = []
    for name, module in model.named_modules():
        classifier = (getattr(module, 'pretrained_cfg', None) or {}).get('classifier')
        for head in ([classifier] if isinstance(classifier, str) else classifier or []):
            prefixes.append(f'{name}.{head}' if name else head)
    return prefixes


@RUNNERS.register_module()
class StrictRunner(Runner):
    """``mmengine.runner.Runner`` whose ``load_checkpoint`` (used by ``load_from`` and ``resume``) is strict.

    Config key ``load_from_finetune`` (bool, default False): load ``load_from`` to fine-tune it; classifier
    entries (:func:`classifier_prefixes`) that are missing or of another size (another ``num_classes``) keep
    their fresh init; every other key must still fit. Evaluation (``tools/test.py``) never sets it.
    """

    load_from_finetune = False

    @classmethod
    def from_cfg(cls, cfg) -> 'StrictRunner':
        finetune = cfg.get('load_from_finetune', False)
        if not isinstance(finetune, bool):
            raise TypeError(f'load_from_finetune must be a bool, got {finetune!r}')
        runner = super().from_cfg(cfg)
        runner.load_from_finetune = finetune
        return runner

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = True,
                        revise_keys: List[Tuple[str, str]] = [(r'^module\.', '')]) -> Dict[str, Any]:
        """mmengine's ``load_checkpoint`` with ``strict=True`` by default; ``strict=False`` is mmengine's own
        lenient load.

        Raises:
            CheckpointError: listing the missing, unexpected and size-mismatched keys (on every rank).
        """
        if not strict:
            return super().load_checkpoint(filename, map_location, strict, revise_keys)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = as_task_checkpoint(model, _load_checkpoint(filename, map_location=map_location))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)  # e.g. EMAHook swaps in the EMA weights
        state = checkpoint.get('state_dict', checkpoint)
        for pattern, replacement in revise_keys:
            state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
        replaceable = classifier_prefixes(model) if self.load_from_finetune else []
        if self.load_from_finetune and not replaceable:
            raise ValueError(f'load_from_finetune=True: {type(model).__name__} holds no timm network with a '
                             f"classifier (pretrained_cfg['classifier']) whose head could be replaced")
        load_state_dict_strict(model, state, filename, replaceable)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}' + (' (fine-tuning: classifier entries that do not fit '
                                                               'keep their init)' if replaceable else ''))
        return checkpoint
