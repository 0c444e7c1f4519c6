"""Register the attnzoo backbones in mmseg 1.x's ``MODELS`` when mmseg (with a full mmcv build) imports.

mmseg's registry is a child of mmengine's root ``MODELS``, where :mod:`attnzoo.integrations` already registered
the backbones, so this only lets mmseg-scoped lookups (``type='mmseg.DiNAT'``) see them as well. mmseg is never
imported otherwise; ``REGISTERED`` says whether it happened; ``register()`` tries again (False when mmseg, or the
compiled mmcv it needs, is missing).
"""
import functools

from . import register_in_openmmlab

register = functools.partial(register_in_openmmlab, 'mmseg')
REGISTERED = register()
