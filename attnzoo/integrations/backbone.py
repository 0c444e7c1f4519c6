"""The one dense-prediction backbone of attnzoo: any timm model's multi-scale features as NCHW maps.

:class:`DenseBackbone` is what every detector / segmentor of ``attnzoo.tasks`` and the OpenMMLab plug-in
(``attnzoo.integrations.mmdet`` / ``.mmseg``) put under their necks:

* ``timm.create_model(model_name, features_only=True, out_indices=...)`` -- attnzoo families and any other
  hierarchical timm model (NHWC feature outputs, as timm's Swin gives, are permuted to NCHW);
* a single-scale model (isotropic NAT/DiNAT, Sparsifiner, ViT) gets a ViTDet-style simple pyramid
  (strides 4 / 8 / 16 / 32 from its stride-16 map) when ``simple_pyramid`` is on (the default for them);
* per-output LayerNorms where the official dense backbone has them (NAT/DiNAT ``norm{i}``, BiFormer
  ``extra_norms.{i}``), so official detection / segmentation checkpoints load with nothing left over;
* the paper's dense-prediction settings by name (``dense_preset='coco'`` / ``'ade20k'``: DiNAT's detection and
  segmentation dilations, BiFormer's 16 / 8 regions with padding), explicit ``model_kwargs`` win;
* mmdet-style ``frozen_stages`` / ``norm_eval`` and ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that
  reads classification checkpoints and official mmdet/mmseg checkpoints (``backbone.`` prefix) through the
  family's ``checkpoint_filter_fn``.
"""
from __future__ import annotations

import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..utils.checkpoint import load_checkpoint, load_state_dict_strict

__all__ = ['DenseBackbone', 'dense_model_kwargs', 'dinat_dense_dilations', 'load_dense_checkpoint',
           'model_family', 'DENSE_PRESETS']


# --------------------------------------------------------------------------------------------------------------
# per-paper dense settings
# --------------------------------------------------------------------------------------------------------------
# Per stage, the dilation pattern that repeats over the stage's layers (official
# detection/configs/dinat*/ and segmentation/configs/dinat*/ of SHI-Labs/Neighborhood-Attention-Transformer).
_DINAT_PATTERNS = {
    ('dinat', 'coco'): ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7), (1, 3, 1, 3, 1)),
    ('dinat_s', 'coco'): ((1, 28), (1, 14), (1, 3, 1, 5, 1, 7), (1, 3)),
    ('dinat', 'ade20k'): ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4), (1, 2, 1, 2, 1)),
    ('dinat_s', 'ade20k'): ((1, 16), (1, 8), (1, 2, 1, 3, 1, 4), (1, 2)),
}
_DEFAULT_DEPTHS = {
    'dinat_mini': (3, 4, 6, 5), 'dinat_tiny': (3, 4, 18, 5), 'dinat_small': (3, 4, 18, 5),
    'dinat_base': (3, 4, 18, 5), 'dinat_large': (3, 4, 18, 5),
    'dinat_s_tiny': (2, 2, 6, 2), 'dinat_s_small': (2, 2, 18, 2), 'dinat_s_base': (2, 2, 18, 2),
    'dinat_s_large': (2, 2, 18, 2),
}
# BiFormer: regions per side and padding of maps not divisible by them (official object_detection/ and
# semantic_segmentation/ configs: n_win=16 / 8, auto_pad=True).
DENSE_PRESETS = {
    'coco': {'biformer': dict(num_regions=16, auto_pad=True)},
    'ade20k': {'biformer': dict(num_regions=8, auto_pad=True)},
}
# Official dense backbones with one LayerNorm per output: (official key pattern, eps).
_OUT_NORMS = {'nat': (r'^norm(\d+)\.(weight|bias)$', 1e-5), 'dinat': (r'^norm(\d+)\.(weight|bias)$', 1e-5),
              'dinat_s': (r'^norm(\d+)\.(weight|bias)$', 1e-5),
              'biformer': (r'^extra_norms\.(\d+)\.(weight|bias)$', 1e-6)}


def model_family(model_name: str) -> str:
    """``'dinat_s'``, ``'dinat'``, ``'nat'``, ``'biformer'``, ... from a timm model name (its first word
    otherwise); isotropic NAT/DiNAT are ``'nat_isotropic'``."""
    base = model_name.split('.')[0]
    if '_isotropic' in base:
        return 'nat_isotropic'
    if base.startswith('dinat_s_'):
        return 'dinat_s'
    return base.split('_')[0]


def dinat_dense_dilations(depths: Sequence[int], preset: str, family: str = 'dinat') -> Tuple[Tuple[int, ...], ...]:
    """DiNAT's per-layer dilations for dense prediction: the official per-stage pattern repeated over each stage.

    ``preset``: ``'coco'`` (Mask / Cascade Mask R-CNN, ~800 px inputs) or ``'ade20k'`` (UPerNet, 512 crops);
    ``family``: ``'dinat'`` or ``'dinat_s'``. E.g. DiNAT-T on COCO: ``(1,28,1), (1,7,1,14), (1,3,1,5,1,7)x3,
    (1,3,1,3,1)``.
    """
    key = (family, preset)
    if key not in _DINAT_PATTERNS:
        raise ValueError(f'preset={preset!r}, family={family!r}: no DiNAT dense dilations; valid: '
                         f'{sorted(_DINAT_PATTERNS)}')
    patterns = _DINAT_PATTERNS[key]
    if len(depths) != len(patterns):
        raise ValueError(f'depths={list(depths)}: expected {len(patterns)} stages')
    return tuple(tuple(p[j % len(p)] for j in range(d)) for d, p in zip(depths, patterns))


def dense_model_kwargs(model_name: str, preset: Optional[str], model_kwargs: Optional[dict] = None) -> dict:
    """The constructor kwargs of ``model_name`` for the dense-prediction ``preset`` (``None``, ``'coco'``,
    ``'ade20k'``), merged under ``model_kwargs`` (which win)."""
    model_kwargs = dict(model_kwargs or {})
    if preset is None:
        return model_kwargs
    if preset not in DENSE_PRESETS:
        raise ValueError(f'dense_preset={preset!r} is unknown; valid: None, {sorted(DENSE_PRESETS)}')
    family = model_family(model_name)
    out = dict(DENSE_PRESETS[preset].get(family, {}))
    if family in ('dinat', 'dinat_s') and 'dilations' not in model_kwargs:
        base = model_name.split('.')[0]
        arch = re.sub(r'_(384|11x11)', '', base)
        depths = model_kwargs.get('depths', _DEFAULT_DEPTHS.get(arch))
        if depths is None:
            raise ValueError(f'model_name={model_name!r}: pass depths= (or dilations=) to use dense_preset={preset!r}')
        out['dilations'] = dinat_dense_dilations(depths, preset, family)
    out.update(model_kwargs)
    return out


# --------------------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (the official per-output norms, applied on NHWC there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2).contiguous()


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a single stride-16 map: 2 deconvs (stride 4), 1 deconv (8), identity
    (16), 2x2 max-pool (32); each level then 1x1 + 3x3 conv to ``out_channels`` (LayerNorm2d after each)."""

    def __init__(self, in_channels: int, out_channels: int = 256, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)):
        super().__init__()
        self.levels = nn.ModuleList()
        for s in scales:
            if s == 4.0:
                layers = [nn.ConvTranspose2d(in_channels, in_channels // 2, 2, 2), LayerNorm2d(in_channels // 2),
                          nn.GELU(), nn.ConvTranspose2d(in_channels // 2, in_channels // 4, 2, 2)]
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


class DenseBackbone(BaseModule):
    """Multi-scale NCHW features of a timm model, the way the detection / segmentation heads want them.

    Args:
        model_name: timm model (attnzoo's register on ``import attnzoo``): ``'dinat_tiny'``, ``'biformer_small'``,
            ``'convnext_tiny'``, ...
        out_indices: stages whose maps are returned (hierarchical models: ``(0, 1, 2, 3)`` = strides 4..32;
            single-scale models: the block to take, e.g. ``(11,)``).
        dense_preset: ``None``, ``'coco'`` or ``'ade20k'``: the paper's dense-prediction constructor settings
            (:func:`dense_model_kwargs`); ``model_kwargs`` win over them.
        model_kwargs: further ``timm.create_model`` kwargs (``drop_path_rate``, ``pretrained``,
            ``pretrained_cfg_overlay=dict(file=...)``, architecture overrides).
        out_norm: one LayerNorm per returned map; ``None`` = as the family's official dense backbone (NAT/DiNAT,
            BiFormer: yes; others: no).
        simple_pyramid: for single-scale models, build :class:`SimplePyramid` to strides 4..32 (``None``: when the
            model has one feature level); ``pyramid_channels`` is its width.
        frozen_stages: -1 trains everything; 0 freezes the stem; ``k`` freezes the stem and stages ``0..k-1``
            (parameters without grad, modules kept in eval mode).
        norm_eval: keep BatchNorm layers in eval mode while training (frozen statistics).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL[, prefix='backbone.'])`` loads a classification
            checkpoint or an official mmdet/mmseg one (see :func:`load_dense_checkpoint`) in ``init_weights()``.

    ``forward(x [B,3,H,W]) -> list`` of ``[B, C_i, H_i, W_i]``; ``channels`` / ``strides`` describe them.
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3), dense_preset: Optional[str] = None,
                 model_kwargs: Optional[dict] = None, out_norm: Optional[bool] = None,
                 simple_pyramid: Optional[bool] = None, pyramid_channels: int = 256, frozen_stages: int = -1,
                 norm_eval: bool = False, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        import attnzoo  # noqa: F401  (registers the zoo's models in timm)
        if not timm.is_model(model_name.split('.')[0]):
            import difflib
            close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
            raise ValueError(f'model_name={model_name!r} is not a registered timm model; close matches: {close}')
        if init_cfg is not None and init_cfg.get('type') != 'Pretrained':
            raise ValueError(f"init_cfg: only dict(type='Pretrained', checkpoint=...) is supported, got {init_cfg}")
        self.model_name = model_name
        self.family = model_family(model_name)
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        kwargs = dense_model_kwargs(model_name, dense_preset, model_kwargs)
        out_indices = tuple(out_indices) if not isinstance(out_indices, int) else out_indices
        self.body = timm.create_model(model_name, features_only=True, out_indices=out_indices, **kwargs)
        info = self.body.feature_info
        channels, strides = list(info.channels()), list(info.reduction())
        self.out_indices = tuple(info.out_indices) if hasattr(info, 'out_indices') else tuple(range(len(channels)))
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
        if self.frozen_stages >= len(self.out_indices) + 1 and self.pyramid is None:
            raise ValueError(f'frozen_stages={frozen_stages} exceeds the {len(self.out_indices)} stages')
        self._freeze_stages()

    @property
    def network(self) -> nn.Module:
        """The timm model itself (inside timm's feature wrapper), whose keys the family's converter produces."""
        return getattr(self.body, 'model', self.body)

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

    # ---- mmdet-style training behaviour -------------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        net = self.network
        matcher = net.group_matcher(coarse=True) if hasattr(net, 'group_matcher') else {}
        stem_re = matcher.get('stem', r'^(stem|patch_embed|conv1|bn1)')
        stem_re = '|'.join(stem_re) if isinstance(stem_re, (list, tuple)) else stem_re
        modules = [m for n, m in net.named_children() if re.match(stem_re, n)]
        info = getattr(self.body, 'feature_info', None)
        names = [info.get('module', i) for i in range(len(self.out_indices))] if info is not None else []
        for i in range(min(self.frozen_stages, len(names))):
            try:
                modules.append(net.get_submodule(names[i]))
            except AttributeError:  # timm's flattened FeatureListNet names: stages_0 -> stages.0
                modules.append(net.get_submodule(names[i].replace('_', '.')))
            if self.out_norms is not None:
                modules.append(self.out_norms[i])
        return modules

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
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

    norm_re = _OUT_NORMS.get(backbone.family, (None,))[0]
    norm_state = {}
    if norm_re is not None:
        for key in [k for k in state if re.match(norm_re, k)]:
            level, param = re.match(norm_re, key).groups()
            level = int(level)
            value = state.pop(key)
            if backbone.out_norms is not None and level in backbone.out_indices:
                norm_state[f'{backbone.out_indices.index(level)}.{param}'] = value

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
