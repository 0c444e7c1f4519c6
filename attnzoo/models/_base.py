"""What the attnzoo classifiers share: the timm model API around a pooled ``ClassifierHead`` (``PooledClassifier``),
the stage-wise API of the hierarchical models (``StagedClassifier``), the input check of their stems, the
construction checks of every family (drop rates, ``features_only`` indices) and the helpers of every family's
``checkpoint_filter_fn``.
"""
import numbers
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import ClassifierHead, get_device_dtype, register_notrace_function
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices

from ._pretrained import resolve_pretrained

__all__ = [
    'build_staged_model', 'check_drop_rates', 'check_out_indices', 'pop_out_indices',
    'PooledClassifier', 'StagedClassifier', 'check_image_batch', 'unwrap_state_dict', 'rename_key',
    'remap_state_dict', 'unmapped_keys_error',
]


@register_notrace_function
def check_image_batch(x: torch.Tensor, in_chans: int) -> None:
    """Raise a named error unless ``x`` is an image batch ``[B, in_chans, H, W]``. (No leading underscore: FX
    only auto-wraps public names, and this shape check must stay out of traced graphs.)"""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f'x: expected an image batch of shape [B, in_chans={in_chans}, H, W], got shape {list(x.shape)}; '
            f'the model was created with in_chans={in_chans}')


def check_drop_rates(**rates: float) -> None:
    """Raise a named error unless every rate given by keyword (``drop_rate``, ``drop_path_rate``, ...: a
    probability of dropping an activation or a residual path) is a number in [0, 1). Outside it timm's
    ``DropPath`` and dropout fail only at the first training step; 1 would drop everything."""
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f'{name}: expected a number in [0, 1), got {type(rate).__name__} {rate!r}')
        if not 0 <= rate < 1:
            raise ValueError(f'{name}: expected a drop probability in [0, 1), got {rate}')


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_out_indices(out_indices: Any, num_features: int) -> Union[int, Tuple[int, ...]]:
    """The ``out_indices`` of ``features_only`` for a model of ``num_features`` feature maps (stages or blocks),
    checked in the terms of timm's ``feature_take_indices``: an int ``n`` takes the last ``n`` (1 to
    ``num_features``); a list or tuple takes those feature indices (negative ones count from the end): at least
    one, each once and in increasing order, the order in which the maps are returned (timm's feature wrappers
    would silently reorder or dedupe them). Returns the int, or the sequence as a tuple.

    Raises:
        TypeError: ``out_indices`` is neither an int nor a list / tuple of ints.
        ValueError: an index out of range, no index, a repeated index or indices out of order.
    """
    if _is_int(out_indices):
        if not 0 < out_indices <= num_features:
            raise ValueError(f'out_indices: last-n ({out_indices}) is out of range (1 to {num_features})')
        return int(out_indices)
    if not isinstance(out_indices, (list, tuple)) or not all(_is_int(i) for i in out_indices):
        raise TypeError(f'out_indices: expected an int (the last n features) or a list / tuple of int feature '
                        f'indices, got {out_indices!r}')
    if not out_indices:
        raise ValueError(f'out_indices: expected at least one feature index (0 to {num_features - 1}), got '
                         f'{out_indices!r}')
    take = []
    for i in out_indices:
        if not -num_features <= i < num_features:
            raise ValueError(f'out_indices: feature index {i} is out of range (0 to {num_features - 1}, or '
                             f'{-num_features} to -1 from the end)')
        take.append(i % num_features)
    if any(b <= a for a, b in zip(take, take[1:])):
        raise ValueError(f'out_indices: expected distinct feature indices in increasing order (the order of the '
                         f'returned maps), got {out_indices!r} (feature indices {take})')
    return tuple(int(i) for i in out_indices)


def pop_out_indices(kwargs: Dict[str, Any], num_features: int, default: Union[int, Tuple[int, ...]]
                    ) -> Union[int, Tuple[int, ...]]:
    """Pop ``out_indices`` (``default`` if absent) from a builder's ``kwargs``; with ``features_only`` it is
    checked by ``check_out_indices`` (without, timm ignores it, and the default may not fit a shallow model)."""
    out_indices = kwargs.pop('out_indices', default)
    return check_out_indices(out_indices, num_features) if kwargs.get('features_only') else out_indices


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

class PooledClassifier(nn.Module):
    """A feature extractor followed by a pooled timm ``ClassifierHead``, with the head's timm API.

    Subclasses set ``num_features``, ``output_fmt`` (the layout of ``forward_features``: 'NHWC' ``[B, H, W, C]`` or
    'NCHW' ``[B, C, H, W]``), implement ``forward_features`` and call ``_init_head`` once the trunk is built.
    """
    num_features: int
    output_fmt: str = 'NHWC'

    def _init_head(self, num_classes: int, global_pool: str, drop_rate: float, device=None, dtype=None) -> None:
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt=self.output_fmt, device=device, dtype=dtype)
        self.head_hidden_size = self.head.num_features  # pooled width (2x num_features for 'catavgmax')

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Relative position bias tables (``*.rpb``) are excluded from weight decay; nothing else beyond timm's
        default (1-d parameters)."""
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: none); ``global_pool=None`` keeps the current pooling."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, in_features=self.num_features, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``forward_features`` map -> pooled ``[B, head_hidden_size]`` (``pre_logits``) or logits
        ``[B, num_classes]``."""
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


class StagedClassifier(PooledClassifier):
    """A hierarchical ``PooledClassifier``: ``stem``, ``stages`` (``nn.Sequential``; every stage has a
    ``grad_checkpointing`` flag), the final ``norm`` (sized for, and only applied to, the last stage's map) and
    ``feature_info`` (one entry per stage). All maps between the modules are in the ``output_fmt`` layout.
    """
    stem: nn.Module
    stages: nn.Sequential
    norm: nn.Module
    feature_info: List[Dict[str, Any]]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise LR decay: stem, then stages (coarse) or blocks (fine)."""
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ]
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's blocks in the backward pass instead of storing activations."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def _to_fmt(self, x: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """A map in the model's ``output_fmt`` layout -> ``output_fmt`` (contiguous when permuted)."""
        if output_fmt == self.output_fmt:
            return x
        return (x.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else x.permute(0, 2, 3, 1)).contiguous()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward pass returning per-stage feature maps (the stage outputs, before the final norm).

        Args:
            x: Images ``[B, in_chans, H, W]``.
            indices: Stages to return: last ``n`` if int, these (negative allowed) if a list, all if None.
            norm: Apply the final norm to the last stage's map when it is returned.
            stop_early: Stop after the last requested stage.
            output_fmt: 'NCHW' (``[B, C_i, H_i, W_i]``) or 'NHWC' (``[B, H_i, W_i, C_i]``).
            intermediates_only: Return only the list of maps.

        Returns:
            The list of maps, or ``(final_features, maps)`` with ``final_features`` the last computed map in the
            model's ``output_fmt`` layout (normed when it is the last stage's).
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        num_stages = len(self.stages)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                x_inter = self.norm(x) if norm and i == num_stages - 1 else x
                intermediates.append(self._to_fmt(x_inter, output_fmt))
        if intermediates_only:
            return intermediates
        if i == num_stages - 1:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last one in ``indices`` (and norm / head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> final normed map, ``[B, H/32, W/32, num_features]`` ('NHWC') or
        ``[B, num_features, H/32, W/32]`` ('NCHW') per ``output_fmt``."""
        return self.norm(self.stages(self.stem(x)))


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

_Renames = Sequence[Tuple[str, Union[str, Callable[[re.Match], str]]]]


def unwrap_state_dict(state_dict: Dict[str, Any], keys: Sequence[str], nested: bool = False) -> Dict[str, Any]:
    """The weights in a training checkpoint: the value of the first of ``keys`` (e.g. ``'model'``,
    ``'state_dict'``, ``'params_ema'``) that holds a dict, else ``state_dict`` itself. ``nested=True`` unwraps
    again until no key matches."""
    key = next((k for k in keys if isinstance(state_dict.get(k), dict)), None)
    if key is None:
        return state_dict
    return unwrap_state_dict(state_dict[key], keys, nested) if nested else state_dict[key]


def rename_key(key: str, renames: _Renames) -> str:
    """Apply every ``(pattern, replacement)`` of ``renames`` in order with ``re.sub``."""
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def unmapped_keys_error(unmapped: List[str], target: str, hint: str, max_listed: Optional[int] = None) -> ValueError:
    """The error of a ``checkpoint_filter_fn`` for checkpoint keys that do not map onto ``target`` (the model's
    name), listing the first ``max_listed`` of them (all if None)."""
    return ValueError(f'state_dict: {len(unmapped)} key(s) do not map onto {target} ({hint}): '
                      f'{unmapped[:max_listed]}')


def remap_state_dict(
        state_dict: Dict[str, torch.Tensor],
        model: nn.Module,
        renames: _Renames,
        hint: str,
        adapt: Optional[Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """Rename every key of ``state_dict`` with ``renames`` and check that it maps onto ``model``.

    Classifier keys (``head.fc.*``) pass even when the model has none (timm's loader drops them when the class
    count differs).

    Args:
        state_dict: Unwrapped checkpoint weights.
        model: The model to load them into.
        renames: ``(pattern, replacement)`` pairs, see ``rename_key``.
        hint: Likely cause named in the error, e.g. 'another variant or configuration?'.
        adapt: ``adapt(new_key, value, target)`` -> the value to load, for keys of ``model``'s state dict
            (``target`` is the model's tensor): resizes or reshapes official tensors.

    Raises:
        ValueError: listing every key that does not map onto a parameter or buffer of ``model``.
    """
    model_state = model.state_dict()
    out, unmapped = {}, []
    for key, value in state_dict.items():
        new_key = rename_key(key, renames)
        if new_key in model_state:
            if adapt is not None:
                value = adapt(new_key, value, model_state[new_key])
        elif not new_key.startswith('head.fc.'):
            unmapped.append(key if key == new_key else f'{key} (-> {new_key})')
        out[new_key] = value
    if unmapped:
        raise unmapped_keys_error(unmapped, type(model).__name__, hint)
    return out


def build_staged_model(model_cls: type, variant: str, pretrained: bool, filter_fn: Callable,
                       default_depths: Sequence[int], **kwargs) -> nn.Module:
    """``build_model_with_cfg`` for a ``StagedClassifier``: ``features_only=True`` defaults to timm's getter (NCHW
    maps from ``forward_intermediates``, trailing stages pruned) over every stage of ``depths`` (default
    ``default_depths``); ``out_indices`` is checked by ``check_out_indices``."""
    num_stages = len(kwargs.get('depths', default_depths))
    out_indices = pop_out_indices(kwargs, num_stages, tuple(range(num_stages)))
    resolve_pretrained(variant, pretrained, kwargs)  # the file through attnzoo's checkpoint loader
    return build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls='getter', flatten_sequential=True, out_indices=out_indices),
        **kwargs)
