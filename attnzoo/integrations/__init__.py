"""attnzoo backbones for OpenMMLab (mmdet 3.x / mmseg 1.x): registration only.

The backbone itself is :class:`attnzoo.models.dense.DenseBackbone` (attnzoo's own dense tasks use it directly,
without this package). Importing this package registers one backbone class per family -- ``NAT``, ``DiNAT``,
``DiNAT_s``, ``BiFormer``, ``FaViT``, ``L2ViT``, ``Sparsifiner`` -- plus the generic ``AttnZooBackbone`` (any timm
``model_name``):

* in an mmengine registry with scope ``attnzoo`` (a child of mmengine's root ``MODELS``), so every OpenMMLab
  config finds ``type='attnzoo.DiNAT'``;
* in mmengine's root ``MODELS`` under the plain names (skipped, with a warning, where a name is taken), so
  ``type='DiNAT'`` works from mmdet / mmseg too;
* in ``mmdet.registry.MODELS`` / ``mmseg.registry.MODELS`` when those import (with a full mmcv build);
  ``REGISTERED_IN`` says where that happened, :func:`register_in_openmmlab` tries again.

An mmdet config::

    custom_imports = dict(imports=['attnzoo.integrations'], allow_failed_imports=False)
    model = dict(backbone=dict(_delete_=True, type='attnzoo.DiNAT', arch='tiny', dense_preset='coco',
                               drop_path_rate=0.2, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                               init_cfg=dict(type='Pretrained', checkpoint='dinat_tiny_in1k_224.pth')),
                 neck=dict(in_channels=[64, 128, 256, 512]))

Extra keyword arguments go to ``timm.create_model`` (``drop_path_rate``, ``kernel_size``, ``dilations``...).
``init_cfg`` takes classification checkpoints and the official mmdet / mmseg ones (``backbone.`` prefix).
"""
import importlib
from typing import Dict, Optional, Sequence, Tuple, Type

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from ..models.dense import DenseBackbone

__all__ = ['MODELS', 'AttnZooBackbone', 'FAMILY_BACKBONES', 'OPENMMLAB_PACKAGES', 'REGISTERED_IN', 'register_backbones',
           'register_in_openmmlab']

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='attnzoo')
OPENMMLAB_PACKAGES = ('mmdet', 'mmseg')


class AttnZooBackbone(DenseBackbone, BaseModule):
    """:class:`~attnzoo.models.dense.DenseBackbone` with the OpenMMLab calling convention, an mmengine
    ``BaseModule``: ``forward`` returns a tuple of NCHW maps; ``arch`` picks the variant of a family class
    (``DiNAT(arch='tiny')`` is ``dinat_tiny``), ``model_name`` any timm model; unknown kwargs go to
    ``timm.create_model``. ``DenseBackbone``'s ``init_cfg`` / ``init_weights`` / ``is_init`` come first in the
    method order; ``BaseModule`` adds mmengine's ``init_cfg`` in the printed module."""

    model_prefix: Optional[str] = None

    def __init__(self, arch: Optional[str] = None, model_name: Optional[str] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 dense_preset: Optional[str] = None, out_norm: Optional[bool] = None,
                 simple_pyramid: Optional[bool] = None, init_cfg: Optional[dict] = None, **model_kwargs):
        if model_name is None:
            if arch is None or self.model_prefix is None:
                raise ValueError(f'{type(self).__name__}: pass arch= (e.g. {self._example_arch()!r}) or model_name=')
            model_name = f'{self.model_prefix}_{arch}'
        elif arch is not None:
            raise ValueError(f'{type(self).__name__}: pass arch= or model_name=, not both')
        super().__init__(model_name, out_indices=out_indices, dense_preset=dense_preset, model_kwargs=model_kwargs,
                         out_norm=out_norm, simple_pyramid=simple_pyramid, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, init_cfg=init_cfg)

    @classmethod
    def _example_arch(cls) -> str:
        return {'favit': 'b0'}.get(cls.model_prefix or '', 'tiny')

    def forward(self, x) -> Tuple:
        return tuple(super().forward(x))


def _family(name: str, prefix: str) -> Type[AttnZooBackbone]:
    return type(name, (AttnZooBackbone,), dict(model_prefix=prefix, __module__=__name__, __doc__=(
        f'attnzoo ``{prefix}_<arch>`` as an OpenMMLab backbone (see :class:`AttnZooBackbone`).')))


FAMILY_BACKBONES: Dict[str, Type[AttnZooBackbone]] = {
    name: _family(name, prefix) for name, prefix in (
        ('NAT', 'nat'), ('DiNAT', 'dinat'), ('DiNAT_s', 'dinat_s'), ('BiFormer', 'biformer'), ('FaViT', 'favit'),
        ('L2ViT', 'l2vit'), ('Sparsifiner', 'sparsifiner_deit'))
}
_ALL = {'AttnZooBackbone': AttnZooBackbone, **FAMILY_BACKBONES}


def register_backbones(registry: Registry, warn: bool = True) -> Dict[str, bool]:
    """Register ``AttnZooBackbone`` and the family classes in ``registry`` (names already taken by another class
    are skipped). Returns ``{name: registered}``."""
    done = {}
    for name, cls in _ALL.items():
        existing = registry.module_dict.get(name)
        if existing is not None and existing is not cls:
            if warn:
                print_log(f'attnzoo.integrations: {registry.scope}.{name} is taken by {existing}; use '
                          f"type='attnzoo.{name}'", logger='current', level=30)
            done[name] = False
            continue
        if existing is None:
            registry.register_module(name=name, module=cls)
        done[name] = True
    return done


def register_in_openmmlab(package: str) -> bool:
    """Register the backbones in ``<package>.registry.MODELS`` (``'mmdet'``, ``'mmseg'``); False when the package
    (or the compiled mmcv it needs) does not import."""
    try:
        registry = importlib.import_module(f'{package}.registry').MODELS
    except Exception:  # ImportError, or the package's mmcv version assertion
        return False
    register_backbones(registry)
    return True


register_backbones(MODELS)
register_backbones(MMENGINE_MODELS)
# mmdet's / mmseg's registries are children of mmengine's root MODELS (registered above); registering there too
# lets their scoped lookups (type='mmdet.DiNAT') see the backbones. Only this import touches the two packages.
REGISTERED_IN = {package: register_in_openmmlab(package) for package in OPENMMLAB_PACKAGES}
