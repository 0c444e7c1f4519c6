"""Task wrappers on mmengine: model (backbone + head + loss), dataset, metric; the glue the command-line tools
share is :mod:`attnzoo.tasks.runtime`.

Importing this package registers every task's components in mmengine's root registries, so an
mmengine config can name them by ``type`` (``TimmClassifier``, ``ImageNetFolder``, ...).
"""
import importlib.util

if importlib.util.find_spec('mmengine') is None:
    raise ImportError("attnzoo.tasks and the tools need mmengine, which the core install leaves out: "
                      "pip install 'attnzoo[train]' (or [det], [seg], [sr] for those tasks)")

from . import checkpointing  # noqa: F401  (registers AtomicCheckpointHook, the configs' checkpoint hook)
from . import classification  # noqa: F401  (registers the classification components)
from . import compiling  # noqa: F401  (registers CompileHook, the tools' --compile)
from . import detection  # noqa: F401  (registers the detection components)
from . import segmentation  # noqa: F401  (registers the segmentation components)
from . import sparsifiner  # noqa: F401  (registers SparsifinerClassifier)
from . import super_resolution  # noqa: F401  (registers the super-resolution components)
from . import runtime  # noqa: F401  (the tools' glue: launcher, CPU threads, loader workers, config overrides)
from .runner import StrictRunner, register_checkpoint_loader

register_checkpoint_loader()  # mmengine reads local checkpoints tensors-only, plus the types its own files need

__all__ = ['checkpointing', 'classification', 'detection', 'segmentation', 'sparsifiner', 'super_resolution',
           'runtime', 'StrictRunner', 'register_checkpoint_loader']
