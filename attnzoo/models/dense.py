"""The one dense-prediction backbone of attnzoo: any timm model's multi-scale features as NCHW maps.

:class:`DenseBackbone` is what every detector / segmentor of ``attnzoo.tasks`` and the OpenMMLab plug-in
(``attnzoo.integrations``, which only registers it) put under their necks:

* ``timm.create_model(model_name, features_only=True, out_indices=...)`` -- attnzoo families and any other
  hierarchical timm model (NHWC feature outputs, as timm's Swin gives, are permuted to NCHW);
* a single-scale model (isotropic NAT/DiNAT, Sparsifiner, ViT) gets a ViTDet-style simple pyramid
  (strides 4 / 8 / 16 / 32 from its stride-16 map) when ``simple_pyramid`` is on (the default for them);
* per-output LayerNorms (``timm.layers.LayerNorm2d``) where the official dense backbone has them (NAT/DiNAT
  ``norm{i}``, BiFormer ``extra_norms.{i}``), so official detection / segmentation checkpoints load with nothing
  left over;
* the paper's dense-prediction settings by name (``dense_preset='coco'`` / ``'ade20k'``), each family's defined in
  its own model file (``nat.dinat_dense_kwargs``: DiNAT's dilations; ``biformer.biformer_dense_kwargs``: 16 / 8
  regions with padding); explicit ``model_kwargs`` win;
* ``frozen_stages`` / ``norm_eval`` with torchvision's ``trainable_layers`` semantics (stages counted in the
  network, not in ``out_indices``) and ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that reads
  classification checkpoints and official mmdet/mmseg checkpoints (``backbone.`` prefix) through the family's
  ``checkpoint_filter_fn``.

The class is a plain ``nn.Module`` (models need no mmengine): ``init_cfg`` / ``init_weights()`` / ``is_init``
follow mmengine's ``BaseModule`` protocol by duck typing, so an mmengine or OpenMMLab model initialises it like
one of its own. Only a URL / ``open-mmlab://`` checkpoint imports mmengine (its ``CheckpointLoader``).

The freezing walk is written here, not taken from torchvision: ``torchvision.models.detection.backbone_utils``
freezes a ResNet by its child names (``layer4``... ``conv1``), while the timm models here name their stages in
``feature_info``; the stem is what matches the model's ``group_matcher`` stem pattern (timm's feature wrappers
without one: :data:`STEM_PATTERN`).
"""
from __future__ import annotations

import difflib
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.layers import LayerNorm2d

from ..utils.checkpoint import load_checkpoint, load_state_dict_strict
from . import biformer, nat

__all__ = ['DenseBackbone', 'SimplePyramid', 'dense_model_kwargs', 'load_dense_checkpoint', 'model_family',
           'DENSE_PRESETS', 'STEM_PATTERN', 'check_model_name']

DENSE_PRESETS = ('coco', 'ade20k')
# Per family: the constructor kwargs of a dense preset, ``fn(model_name, preset, model_kwargs) -> dict``.
_PRESET_KWARGS: Dict[str, Callable[[str, str, dict], dict]] = {
    'dinat': nat.dinat_dense_kwargs, 'dinat_s': nat.dinat_dense_kwargs, 'biformer': biformer.biformer_dense_kwargs}
# Per family: the official dense backbone's LayerNorm after each output (checkpoint key pattern, eps).
_OUT_NORMS: Dict[str, Tuple[str, float]] = {
    'nat': nat.DENSE_OUT_NORM, 'dinat': nat.DENSE_OUT_NORM, 'dinat_s': nat.DENSE_OUT_NORM,
    'biformer': biformer.DENSE_OUT_NORM}
# The stem's children in timm's flattened feature wrappers (FeatureListNet drops the model's group_matcher):
# attnzoo's / ConvNeXt's ``stem``, ViT / Swin ``patch_embed``, ResNet's ``conv1 bn1 act1 maxpool``.
STEM_PATTERN = r'^(stem|patch_embed|conv1|bn1|act1|maxpool)'


def model_family(model_name: str) -> str:
    """``'dinat_s'``, ``'dinat'``, ``'nat'``, ``'biformer'``, ... from a timm model name (its first word
    otherwise); isotropic NAT/DiNAT are ``'nat_isotropic'``."""
    base = model_name.split('.')[0]
    if '_isotropic' in base:
        return 'nat_isotropic'
    if base.startswith('dinat_s_'):
        return 'dinat_s'
    return base.split('_')[0]


def check_model_name(model_name: str) -> None:
    """Raise a ``ValueError`` naming the closest registered timm models if ``model_name`` (a tag allowed) is not
    one (``import attnzoo`` registers the zoo's)."""
    if not timm.is_model(model_name.split('.')[0]):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        raise ValueError(f'model_name={model_name!r} is not a registered timm model '
                         f'(did you `import attnzoo`?); close matches: {close}')


def dense_model_kwargs(model_name: str, preset: Optional[str], model_kwargs: Optional[dict] = None) -> dict:
    """The constructor kwargs of ``model_name`` for the dense-prediction ``preset`` (``None``, ``'coco'``,
    ``'ade20k'``), merged under ``model_kwargs`` (which win)."""
    model_kwargs = dict(model_kwargs or {})
    if preset is None:
        return model_kwargs
    if preset not in DENSE_PRESETS:
        raise ValueError(f'dense_preset={preset!r} is unknown; valid: None, {sorted(DENSE_PRESETS)}')
    preset_fn = _PRESET_KWARGS.get(model_family(model_name))
    out = preset_fn(model_name, preset, model_kwargs) if preset_fn is not None else {}
    out.update(model_kwargs)
    return out


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a single stride-16 map: 2 deconvs (stride 4), 1 deconv (8), identity
    (16), 2x2 max-pool (32); each level then 1x1 + 3x3 conv to ``out_channels`` (LayerNorm2d after each).

    ``forward(x [B, C, H, W]) -> list`` of ``[B, out_channels, H * s, W * s]`` for each scale ``s``.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)):
        super().__init__()
        self.levels = nn.ModuleList()
        for s in scales:
            if s == 4.0:
                layers = [nn.ConvTranspose2d(in_channels, in_channels // 2, 2, 2),
                          LayerNorm2d(in_channels // 2, eps=1e-5), nn.GELU(),
                          nn.ConvTranspose2d(in_channels // 2, in_channels // 4, 2, 2)]
                dim = in_channels // 4
            elif s == 2.0:
                layers, dim = [nn.ConvTranspose2d(in_channels, in_channels // 2, 2, 2)], in_channels // 2
            elif s == 1.0:
                layers, dim = [], in_channels
            elif s == 0.5:
                layers, dim = [nn.MaxPool2d(2, 2)], in_channels
            else:
                raise ValueError(f'scales: expected values in (4, 2, 1, 0.5), got {s}')
            layers += [nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels, eps=1e-6),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       LayerNorm2d(out_channels, eps=1e-6)]
            self.levels.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [level(x) for level in self.levels]


def _stem_pattern(net: nn.Module) -> str:
    """The regex of the stem's child names: the model's ``group_matcher`` ``stem``, else :data:`STEM_PATTERN`."""
    matcher = net.group_matcher(coarse=True) if hasattr(net, 'group_matcher') else {}
    stem = matcher.get('stem', STEM_PATTERN)
    return '|'.join(stem) if isinstance(stem, (list, tuple)) else stem


def _submodule(net: nn.Module, name: str) -> Optional[nn.Module]:
    """``net.get_submodule(name)``, also in timm's flattened ``FeatureListNet`` (``stages.0`` -> ``stages_0``);
    None where the features-only wrapper pruned it (the blocks past the last returned index)."""
    for candidate in (name, name.replace('.', '_')):
        try:
            return net.get_submodule(candidate)
        except AttributeError:
            continue
    return None


class DenseBackbone(nn.Module):
    """Multi-scale NCHW features of a timm model, the way the detection / segmentation heads want them.

    Args:
        model_name: timm model (attnzoo's register on ``import attnzoo``): ``'dinat_tiny'``, ``'biformer_small'``,
            ``'convnext_tiny'``, ...
        out_indices: timm feature indices whose maps are returned (attnzoo's hierarchical models: ``(0, 1, 2, 3)``
            = strides 4..32; timm's ResNet: ``(1, 2, 3, 4)``, index 0 being its stem; single-scale models: the
            block to take, e.g. ``(11,)``).
        dense_preset: ``None``, ``'coco'`` or ``'ade20k'``: the paper's dense-prediction constructor settings
            (:func:`dense_model_kwargs`); ``model_kwargs`` win over them.
        model_kwargs: further ``timm.create_model`` kwargs (``drop_path_rate``, ``pretrained``,
            ``pretrained_cfg_overlay=dict(file=...)``, architecture overrides).
        out_norm: one LayerNorm per returned map; ``None`` = as the family's official dense backbone (NAT/DiNAT,
            BiFormer: yes; others: no).
        simple_pyramid: for single-scale models, build :class:`SimplePyramid` to strides 4..32 (``None``: when the
            model has one feature level); ``pyramid_channels`` is its width.
        frozen_stages: -1 trains everything; 0 freezes the stem; ``k`` freezes the stem and the network's first
            ``k`` stages, whether returned or not, up to all of them (``num_stages``); a stage's output norm is
            frozen with it. Stages are the feature levels of ``feature_info`` past the stem, counted in the
            network (ResNet: ``frozen_stages=1`` freezes ``conv1`` / ``bn1`` and ``layer1``), which is
            torchvision's ``trainable_layers = num_stages - frozen_stages``. Frozen: parameters without grad,
            modules kept in eval mode. The simple pyramid is never frozen.
        norm_eval: keep BatchNorm layers in eval mode while training (frozen statistics).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL[, prefix='backbone.'])`` loads a classification
            checkpoint or an official mmdet/mmseg one (see :func:`load_dense_checkpoint`) in ``init_weights()``.

    ``forward(x [B,3,H,W]) -> list`` of ``[B, C_i, H_i, W_i]``; ``channels`` / ``strides`` describe them.
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3), dense_preset: Optional[str] = None,
                 model_kwargs: Optional[dict] = None, out_norm: Optional[bool] = None,
                 simple_pyramid: Optional[bool] = None, pyramid_channels: int = 256, frozen_stages: int = -1,
                 norm_eval: bool = False, init_cfg: Optional[dict] = None):
        super().__init__()
        check_model_name(model_name)
        if init_cfg is not None and init_cfg.get('type') != 'Pretrained':
            raise ValueError(f"init_cfg: only dict(type='Pretrained', checkpoint=...) is supported, got {init_cfg}")
        self.init_cfg, self._is_init = init_cfg, False
        self.model_name = model_name
        self.family = model_family(model_name)
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        kwargs = dense_model_kwargs(model_name, dense_preset, model_kwargs)
        out_indices = tuple(out_indices) if not isinstance(out_indices, int) else out_indices
        self.body = timm.create_model(model_name, features_only=True, out_indices=out_indices, **kwargs)
        info = self.body.feature_info
        channels, strides = list(info.channels()), list(info.reduction())
        self.out_indices = tuple(info.out_indices)
        self._nhwc = str(getattr(self.body, 'output_fmt', 'NCHW')).upper().endswith('NHWC')

        if simple_pyramid is None:
            simple_pyramid = len(channels) == 1
        self.pyramid = SimplePyramid(channels[-1], pyramid_channels) if simple_pyramid else None
        if self.pyramid is not None:
            if len(channels) != 1 or strides[0] != 16:
                raise ValueError(f'simple_pyramid needs one stride-16 map, {model_name} gives strides {strides}')
            channels, strides = [pyramid_channels] * 4, [4, 8, 16, 32]

        if out_norm is None:
            out_norm = self.family in _OUT_NORMS and self.pyramid is None
        eps = _OUT_NORMS.get(self.family, (None, 1e-5))[1]
        self.out_norms = nn.ModuleList(LayerNorm2d(c, eps=eps) for c in channels) if out_norm else None
        self.channels, self.strides = channels, strides
        self.stage_modules = self._stage_module_names()
        if not -1 <= self.frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages}: valid -1 (train all), 0 (the stem) .. '
                             f'{self.num_stages} (the stem and all {self.num_stages} stages of {model_name})')
        self._freeze_stages()

    @property
    def network(self) -> nn.Module:
        """The timm model itself (inside timm's feature wrapper), whose keys the family's converter produces."""
        return getattr(self.body, 'model', self.body)

    @property
    def num_stages(self) -> int:
        """The network's stages (feature levels past the stem), returned or not: ``frozen_stages``' upper bound."""
        return len(self.stage_modules)

    @property
    def is_init(self) -> bool:
        """Whether ``init_weights()`` ran (mmengine's ``BaseModule`` protocol: it is then not called again)."""
        return self._is_init

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        feats = list(feats) if isinstance(feats, (list, tuple)) else [feats]
        if self._nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        if self.pyramid is not None:
            feats = self.pyramid(feats[-1])
        if self.out_norms is not None:
            feats = [norm(f) for norm, f in zip(self.out_norms, feats)]
        return feats

    # ---- freezing -----------------------------------------------------------------------------------------
    def _stage_module_names(self) -> List[str]:
        """The module names of the network's stages: the ``feature_info`` entries (all, by absolute index) that
        are not the stem and that the features-only network still holds."""
        net = self.network
        stem_re = _stem_pattern(net)
        names = [entry['module'] for entry in self.body.feature_info.info if not re.match(stem_re, entry['module'])]
        return [name for name in names if _submodule(net, name) is not None]

    def _stage_of_feature(self, index: int) -> int:
        """The stage (0-based) that feature index ``index`` is the output of; -1 for a stem feature."""
        name = self.body.feature_info.info[index]['module']
        return self.stage_modules.index(name) if name in self.stage_modules else -1

    def _frozen_modules(self) -> List[nn.Module]:
        """The stem's children, the first ``frozen_stages`` stages, and the output norms of frozen stages."""
        if self.frozen_stages < 0:
            return []
        net = self.network
        stem_re = _stem_pattern(net)
        modules = [m for n, m in net.named_children() if re.match(stem_re, n)]
        modules += [_submodule(net, name) for name in self.stage_modules[:self.frozen_stages]]
        if self.out_norms is not None and self.pyramid is None:
            modules += [norm for norm, index in zip(self.out_norms, self.out_indices)
                        if self._stage_of_feature(index) < self.frozen_stages]
        return modules

    def _frozen_parameters(self) -> List[nn.Parameter]:
        """The parameters of :meth:`_frozen_modules` and, once the stem is frozen, the network's own stem
        parameters (a ViT's ``cls_token`` / ``pos_embed``)."""
        params = [p for m in self._frozen_modules() for p in m.parameters()]
        if self.frozen_stages >= 0:
            stem_re = _stem_pattern(self.network)
            params += [p for n, p in self.network.named_parameters(recurse=False) if re.match(stem_re, n)]
        return params

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
        for p in self._frozen_parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ---- weights ------------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` if given (timm already initialised
        the network, or loaded ``pretrained=True`` weights, in the constructor)."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and cfg.get('checkpoint'):
            load_dense_checkpoint(self, cfg['checkpoint'], prefix=cfg.get('prefix', 'backbone.'))
        self._is_init = True


def _read_checkpoint(checkpoint: Union[str, dict]) -> dict:
    """A loaded dict as is; a local path through attnzoo's loader (tensors only, plus the types of official
    and mmengine checkpoints); a URL / ``open-mmlab://`` name through mmengine's ``CheckpointLoader``."""
    if isinstance(checkpoint, dict):
        return checkpoint
    if '://' not in checkpoint:
        return load_checkpoint(checkpoint)
    from mmengine.runner.checkpoint import CheckpointLoader
    return CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')


def _split_out_norms(backbone: DenseBackbone, state: Dict[str, Any]) -> Dict[str, Any]:
    """Pop the official per-output norm keys out of ``state``; those of returned levels, keyed for
    ``backbone.out_norms`` (``'<position in out_indices>.<param>'``)."""
    norm_re = _OUT_NORMS.get(backbone.family, (None,))[0]
    norm_state = {}
    if norm_re is None:
        return norm_state
    for key in [k for k in state if re.match(norm_re, k)]:
        level, param = re.match(norm_re, key).groups()
        value = state.pop(key)
        if backbone.out_norms is not None and int(level) in backbone.out_indices:
            norm_state[f'{backbone.out_indices.index(int(level))}.{param}'] = value
    return norm_state


def load_dense_checkpoint(backbone: DenseBackbone, checkpoint: Union[str, dict], prefix: str = 'backbone.',
                          strict: bool = True) -> Dict[str, List[str]]:
    """Load a classification or an official detection / segmentation checkpoint into ``backbone``.

    ``checkpoint``: a local path (read tensors-only by :func:`attnzoo.utils.checkpoint.load_checkpoint`), a URL
    (mmengine's ``CheckpointLoader``) or an already loaded dict. Wrappers (``state_dict`` / ``model``) are
    stripped; if keys start with ``prefix`` (mmdet / mmseg checkpoints: ``backbone.``) only those are kept,
    without it. The official per-output norms (NAT/DiNAT ``norm{i}``, BiFormer ``extra_norms.{i}``) go to
    ``out_norms``; the rest goes through the family's ``checkpoint_filter_fn`` (which raises on keys that do not
    map). Heads and necks of the checkpoint are ignored.

    With ``strict``, parameters of the network that the checkpoint does not provide, keys that do not map and
    tensors of another size raise a ``CheckpointError`` listing them (the final classification norm and head,
    which dense backbones drop, excepted). Returns ``dict(missing=[...], ignored=[...])``.
    """
    state = _read_checkpoint(checkpoint)
    for key in ('state_dict', 'model', 'params_ema'):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if any(k.startswith(prefix) for k in state):
        ignored = sorted({k.split('.')[0] for k in state if not k.startswith(prefix)})
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        ignored = []
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    norm_state = _split_out_norms(backbone, state)

    net = backbone.network
    net_state = net.state_dict()
    # the classification norm / head, pruned from a features-only network
    tops = {k.split('.')[0] for k in net_state}
    state = {k: v for k, v in state.items() if not (re.match(r'^(norm|head)\.', k) and k.split('.')[0] not in tops)}
    filter_fn = getattr(sys.modules.get(type(net).__module__), 'checkpoint_filter_fn', None)
    if filter_fn is not None:
        state = filter_fn(state, net)
    # classification heads and norms that the dense network does not have are ignored
    state = {k: v for k, v in state.items() if k in net_state or not re.match(r'^(head|fc|norm|classifier)\b', k)}
    missing = [k for k in net_state if k not in state]
    if strict:
        source = f'checkpoint={checkpoint!r}' if isinstance(checkpoint, str) else 'checkpoint'
        load_state_dict_strict(net, state, f'{source} (as {backbone.model_name} backbone)')
    else:
        net.load_state_dict({k: v for k, v in state.items() if k in net_state}, strict=False)
    if backbone.out_norms is not None and norm_state:
        backbone.out_norms.load_state_dict(norm_state, strict=True)
    elif backbone.out_norms is not None:
        missing.append('out_norms.*')
    return dict(missing=missing, ignored=ignored)
