"""Register the attnzoo backbones in mmseg 1.x's ``MODELS`` when mmseg (with a full mmcv build) imports.

mmseg's registry is a child of mmengine's root ``MODELS``, where :mod:`attnzoo.integrations` already registered
the backbones, so this only lets mmseg-scoped lookups (``type='mmseg.DiNAT'``) see them as well. mmseg is never
imported otherwise; ``REGISTERED`` says whether it happened.
"""
REGISTERED = False


def register() -> bool:
    """Register in ``mmseg.registry.MODELS``; False when mmseg (or the compiled mmcv it needs) is missing."""
    global REGISTERED
    try:
        from mmseg.registry import MODELS as MMSEG_MODELS
    except Exception:  # ImportError, or mmseg's mmcv version assertion
        return False
    from . import register_backbones
    register_backbones(MMSEG_MODELS)
    REGISTERED = True
    return True


register()
