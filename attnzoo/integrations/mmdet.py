"""Register the attnzoo backbones in mmdet 3.x's ``MODELS`` when mmdet (with a full mmcv build) imports.

mmdet's registry is a child of mmengine's root ``MODELS``, where :mod:`attnzoo.integrations` already registered
the backbones, so this only lets mmdet-scoped lookups (``type='mmdet.DiNAT'``) see them as well. mmdet is never
imported otherwise; ``REGISTERED`` says whether it happened.
"""
REGISTERED = False


def register() -> bool:
    """Register in ``mmdet.registry.MODELS``; False when mmdet (or the compiled mmcv it needs) is missing."""
    global REGISTERED
    try:
        from mmdet.registry import MODELS as MMDET_MODELS
    except Exception:  # ImportError, or mmdet's mmcv version assertion
        return False
    from . import register_backbones
    register_backbones(MMDET_MODELS)
    REGISTERED = True
    return True


register()
