"""Compiled and CUDA-graph training for the tools: ``attnzoo-train CONFIG --compile [MODE]``.

:func:`apply_compile` adds a :class:`CompileHook` to a config; the hook compiles the task model's network in
place (``nn.Module.compile``, so the state-dict keys, the checkpoints and ``load_from`` stay those of an eager
run) with ``torch.compile(mode=MODE, dynamic=False)`` when training starts.

Why not mmengine's own ``compile`` config key: mmengine 0.10.7's ``Runner`` compiles ``model.train_step``, which
holds the data preprocessor, timm's Mixup (numpy random draws), the loss parsing and ``optim_wrapper.update_params``
(backward, the grad-norm ``float()`` for the log, clipping, the optimizer step with a scheduler-changed lr). On the
digits demo (dinat_mini, mixup on, 12 iterations, ``backend='eager'`` to count only dynamo's work;
``benchmarks/compile_target.py``, ``benchmarks/results/cpu_compile_target.txt``) that gave 54 graphs, graph breaks
at every Mixup draw, ``Tensor.backward`` and ``.item()``, and 74 recompiles (Mixup's drawn values are guarded on), so
the step falls back to eager once the recompile limit is hit. Compiling only the network gave 3 graphs (train,
eval, the last partial val batch), no graph break and 2 recompiles.

What this keeps eager, in every mode: mixup/cutmix and the loss (``TimmClassifier.loss`` around the network), the
AMP autocast context and the loss scaler (the compiled graph is traced under the autocast state it runs in),
gradient clipping and the grad-norm log, the optimizer step and the lr schedule, EMA (``EMAHook`` copies the model
in ``before_run``, before this hook compiles it in ``before_train``, and swaps parameters, never calls the copy) and
DDP (the wrapper stays outside; its gradient hooks fire on the compiled backward's outputs, all at the end of that
backward, so all-reduce overlaps less with compute than in eager).

``dynamic=False`` by default: with dynamo's automatic dynamic shapes a second batch size (the eval batch, a last
partial batch) makes the batch dimension symbolic, and a dinat_tiny model compiled, run for inference and then
trained fell back to eager speed on the H200 (``tools/benchmark.py --inference-then-train``); static shapes compile
one graph per batch size (at most ``torch._dynamo.config.recompile_limit``).

CUDA graphs (``MODE='reduce-overhead'``, the static-shape ImageNet case): Inductor's CUDA-graph trees capture the
network's forward and backward; everything listed above stays an eager step around them (so the optimizer step is
not captured). The hook marks a new step (``torch.compiler.cudagraph_mark_step_begin``) before every train, val
and test iteration, which frees the previous iteration's graph outputs. It requires a train dataloader with
``drop_last=True`` (a last partial batch would record a second graph and pool for one batch per epoch) and no
gradient accumulation (``optim_wrapper.accumulative_counts`` 1): a ``.grad`` that is a graph output is overwritten
by the next replay (pytorch/pytorch#169545). On CPU Inductor skips CUDA graphs and the mode compiles as ``default``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

__all__ = ['COMPILE_MODES', 'CUDAGRAPH_MODE', 'CompileHook', 'apply_compile', 'check_cudagraph_training']

COMPILE_MODES = ('default', 'max-autotune-no-cudagraphs', 'reduce-overhead')
CUDAGRAPH_MODE = 'reduce-overhead'


def _check_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f'compile mode must be one of {COMPILE_MODES}, got {mode!r}')


def apply_compile(cfg, mode: str = 'default', module: str = 'model') -> None:
    """Make ``cfg`` (an mmengine ``Config``) train with its network compiled: appends
    ``dict(type='CompileHook', mode=mode, module=module)`` to ``cfg.custom_hooks``.

    Raises:
        ValueError: ``mode`` not in :data:`COMPILE_MODES`; ``cfg.compile`` (mmengine's compile of the whole
            ``train_step``, see the module docstring) also set; a :class:`CompileHook` already in the config.
    """
    _check_mode(mode)
    if cfg.get('compile'):
        raise ValueError(f"cfg.compile={cfg.compile!r} (mmengine's compile of train_step) and --compile cannot "
                         'both be set: leave cfg.compile unset')
    hooks = list(cfg.get('custom_hooks') or [])
    if any(hook.get('type') in ('CompileHook', CompileHook) for hook in hooks):
        raise ValueError('the config already has a CompileHook in custom_hooks: drop it or the --compile flag')
    cfg.custom_hooks = hooks + [dict(type='CompileHook', mode=mode, module=module)]


def check_cudagraph_training(train_dataloader, optim_wrapper) -> None:
    """Refuse a training setup that CUDA-graph mode cannot replay: ``train_dataloader`` (a ``DataLoader``) must
    drop its last partial batch, and ``optim_wrapper`` (mmengine's) must not accumulate gradients.

    Raises:
        ValueError: naming ``train_dataloader.drop_last`` or ``optim_wrapper.accumulative_counts``.
    """
    if not getattr(train_dataloader, 'drop_last', False):
        raise ValueError(f"--compile {CUDAGRAPH_MODE} needs static shapes: set train_dataloader.drop_last=True "
                         '(got False: the last partial batch of each epoch would record another CUDA graph)')
    counts = getattr(optim_wrapper, '_accumulative_counts', 1)
    if counts != 1:
        raise ValueError(f'--compile {CUDAGRAPH_MODE} does not support gradient accumulation: '
                         f'optim_wrapper.accumulative_counts must be 1, got {counts} (a .grad that is a CUDA-graph '
                         'output is overwritten by the next replay, pytorch/pytorch#169545)')


def _network(model: nn.Module, module: str) -> nn.Module:
    """The submodule ``module`` (a dotted name) of ``model`` (unwrapped from DDP first)."""
    model = model.module if is_model_wrapper(model) else model
    try:
        return model.get_submodule(module)
    except AttributeError:
        children = [name for name, _ in model.named_children()]
        raise ValueError(f'CompileHook module={module!r} is not a submodule of {type(model).__name__}; '
                         f'its children: {children}') from None


@HOOKS.register_module()
class CompileHook(Hook):
    """Compile the task model's network in place when training starts (see the module docstring).

    Args:
        mode: one of :data:`COMPILE_MODES` (``torch.compile``'s ``mode``; ``'reduce-overhead'`` is CUDA-graph mode).
        module: dotted name of the network inside the task model (``'model'``: ``TimmClassifier``'s timm network;
            ``'backbone'`` for a detector).
        dynamic: ``torch.compile``'s ``dynamic``; ``False`` (static shapes, one graph per batch size) or ``None``
            (dynamo's automatic dynamic shapes).
        backend: ``torch.compile``'s ``backend`` (``'inductor'``; ``'aot_eager'`` traces without code generation).
    """

    priority = 'VERY_HIGH'  # mark a new CUDA-graph step before any other hook touches the iteration

    def __init__(self, mode: str = 'default', module: str = 'model', dynamic: Optional[bool] = False,
                 backend: str = 'inductor'):
        _check_mode(mode)
        if dynamic not in (False, None):
            raise ValueError(f'dynamic must be False or None, got {dynamic!r}')
        if not isinstance(module, str) or not module:
            raise ValueError(f'module must be a non-empty dotted submodule name, got {module!r}')
        self.mode = mode
        self.module = module
        self.dynamic = dynamic
        self.backend = backend

    @property
    def cudagraphs(self) -> bool:
        return self.mode == CUDAGRAPH_MODE

    def before_train(self, runner) -> None:
        """Check CUDA-graph mode's static-shape training, then compile the network (lazily: the first forward of
        each batch shape traces it)."""
        network = _network(runner.model, self.module)
        if self.cudagraphs:
            check_cudagraph_training(runner.train_dataloader, runner.optim_wrapper)
        network.compile(mode=self.mode, dynamic=self.dynamic, backend=self.backend)
        print_log(f'CompileHook: {self.module} compiled (mode={self.mode}, dynamic={self.dynamic}, '
                  f'backend={self.backend}); the first iterations of each batch shape compile it', logger='current')

    def _mark_step(self) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._mark_step()

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._mark_step()

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._mark_step()
