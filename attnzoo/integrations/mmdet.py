"""Register the attnzoo backbones in mmdet 3.x's ``MODELS`` when mmdet (with a full mmcv build) imports.

mmdet's registry is a child of mmengine's root ``MODELS``, where :mod:`attnzoo.integrations` already registered
the backbones, so this only lets mmdet-scoped lookups (``type='mmdet.DiNAT'``) see them as well. mmdet is never
imported otherwise; ``REGISTERED`` says whether it happened; ``register()`` tries again (False when mmdet, or the
compiled mmcv it needs, is missing).
"""
import functools

from . import register_in_openmmlab

register = functools.partial(register_in_openmmlab, 'mmdet')
REGISTERED = register()
