"""Image classification on mmengine's Runner, built from timm's factories.

Everything registered here lives in mmengine's root registries, so a config names it by ``type``:

* ``MODELS``: :class:`TimmClassifier` -- ``timm.create_model(model_name, **model_kwargs)`` with
  timm ``Mixup``/CutMix + label smoothing and ``SoftTargetCrossEntropy`` in training, softmax
  scores in val/test.
* ``DATASETS``: :class:`ImageNetFolder` -- ``root/<split>/<class>/<image>`` through
  ``timm.data.create_dataset`` (ImageFolder reader) and ``timm.data.create_transform``
  (RandAugment, RandomErasing, ...), with input size / mean / std / interpolation / crop_pct
  taken from the model's ``pretrained_cfg``.
* ``METRICS``: :class:`ClsAccuracy` -- top-1 / top-5, correct under DDP (mmengine collects
  per-sample results across ranks and drops the sampler's padding).
* ``OPTIM_WRAPPER_CONSTRUCTORS``: :class:`TimmOptimWrapperConstructor` -- the optimizer comes
  from ``timm.optim.create_optimizer_v2`` (so ``no_weight_decay()``, 1-d params without decay
  and ``layer_decay`` via ``group_matcher()`` behave as in timm's ``train.py``).
* ``OPTIM_WRAPPERS``: :class:`AutoAmpOptimWrapper` -- mmengine's ``AmpOptimWrapper`` that also
  runs on CPU (bfloat16 autocast, no loss scaler); fp16 + dynamic loss scaling on CUDA.
* ``HOOKS``: :class:`ClsSummaryHook` -- prints ``Final: top1=.. top5=.. epochs=.. time=..``.

``ImageNetFolder(prepare='sklearn_digits')`` writes scikit-learn's handwritten digits as an ImageNet-style folder
(:func:`attnzoo.tasks.demo_data.write_digits_imagefolder`) when the folder is missing.
"""
from __future__ import annotations

import copy
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import timm
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import (DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS,
                               OPTIM_WRAPPERS)
from PIL import Image, ImageOps
from timm.data import Mixup, create_dataset, create_transform, resolve_data_config
from timm.data import auto_augment
from timm.data.mixup import mixup_target
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from ..models.dense import check_model_name
from ._common import SummaryHook, final_line, find_metric
from .demo_data import prepare_dataset

__all__ = [
    'TimmClassifier', 'ImageNetFolder', 'ClsAccuracy', 'TimmOptimWrapperConstructor',
    'AutoAmpOptimWrapper', 'ClsSummaryHook', 'format_summary', 'BAD_IMAGE_LABEL', 'allow_zero_bit_posterize',
]


# --------------------------------------------------------------------------------------------
# RandAugment on current Pillow
# --------------------------------------------------------------------------------------------
_TIMM_POSTERIZE = auto_augment.posterize


def _pillow_rejects_zero_bits() -> bool:
    try:
        ImageOps.posterize(Image.new('RGB', (1, 1)), 0)
    except ValueError:
        return True
    return False


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's ``posterize`` op, with 0 bits kept giving the black image older Pillow gave."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return _TIMM_POSTERIZE(img, bits_to_keep, **kwargs)


def allow_zero_bit_posterize() -> bool:
    """Point timm's posterize augment ops at :func:`_posterize` where Pillow refuses 0 bits; idempotent, and a
    no-op on a Pillow that accepts them. Returns whether the ops are the patched ones.

    The defect (timm 1.0.31, ``timm/data/auto_augment.py``): ``posterize(img, bits_to_keep)`` hands its argument
    to ``PIL.ImageOps.posterize`` unchanged, and ``_posterize_increasing_level_to_arg`` gives
    ``4 - int(magnitude / 10 * 4)`` bits, 0 at magnitude 10, which ``rand-m9-mstd0.5-inc1`` (every recipe here)
    reaches whenever the sampled magnitude clips at 10 (``PosterizeIncreasing``; ``Posterize`` gives 0 bits below
    magnitude 2.5). Pillow < 12 returned a black image for ``bits=0``; Pillow >= 12 raises ``ValueError``, which
    crashed a data-loader worker after a few thousand images. No timm report of it was found. ``AugmentOp``
    binds its op when the transform is built, so :class:`ImageNetFolder` calls this before building its
    transform, and workers unpickle the patched op by name.
    """
    if _pillow_rejects_zero_bits():
        for name, op in list(auto_augment.NAME_TO_OP.items()):
            if op is _TIMM_POSTERIZE:
                auto_augment.NAME_TO_OP[name] = _posterize
    return any(op is _posterize for op in auto_augment.NAME_TO_OP.values())


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
@MODELS.register_module()
class TimmClassifier(BaseModel):
    """A timm classifier as an mmengine model.

    Args:
        model_name: any ``timm.list_models()`` name (``import attnzoo`` adds the zoo's).
        num_classes: classifier size.
        model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``pretrained``,
            ``pretrained_cfg_overlay=dict(file=...)``, architecture overrides, ...).
        mixup: kwargs of ``timm.data.Mixup`` (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``,
            ``prob``, ``switch_prob``, ``mode``); ``None`` or all alphas 0 disables it.
        smoothing: label smoothing (inside the mixup targets when mixup is on, else
            ``LabelSmoothingCrossEntropy``), as timm's ``train.py`` does.
        data_preprocessor: mmengine data preprocessor (default: device cast only; normalisation
            is part of the timm transform).

    ``forward(inputs, data_samples, mode)``: ``inputs`` is a float batch ``[B, C, H, W]``,
    ``data_samples`` the int64 labels ``[B]``. ``mode='loss'`` returns ``{'loss': ...}``,
    ``'predict'`` a list of ``dict(pred_score, pred_label[, gt_label])``, ``'tensor'`` the logits.
    """

    def __init__(self, model_name: str, num_classes: int = 1000, model_kwargs: Optional[dict] = None,
                 mixup: Optional[dict] = None, smoothing: float = 0.1,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {smoothing!r}')
        check_model_name(model_name)
        self.model_name = model_name
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.model = timm.create_model(model_name, num_classes=num_classes, **(model_kwargs or {}))

        mixup = dict(mixup or {})
        active = (mixup.get('mixup_alpha', 0.) > 0 or mixup.get('cutmix_alpha', 0.) > 0
                  or mixup.get('cutmix_minmax') is not None) and mixup.get('prob', 1.0) > 0
        self.mixup_fn = Mixup(label_smoothing=smoothing, num_classes=num_classes, **mixup) if active else None
        if self.mixup_fn is not None:
            self.train_loss = SoftTargetCrossEntropy()
        elif smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(smoothing=smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()

    def init_weights(self):
        # timm models initialise (or load pretrained weights) in their constructor; mmengine's
        # default would call ``init_weights`` of children and re-initialise e.g. a ViT.
        pass

    # timm's optimizer factory and layer-decay helpers look these up on the module they get
    def no_weight_decay(self):
        fn = getattr(self.model, 'no_weight_decay', None)
        return {f'model.{n}' for n in fn()} if fn is not None else set()

    def forward(self, inputs: torch.Tensor, data_samples: Optional[torch.Tensor] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self._readable_loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.model(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _readable_loss(self, inputs: torch.Tensor, data_samples: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``loss`` of the readable images of the batch: the unreadable ones (label ``BAD_IMAGE_LABEL``) are left
        out, and a batch of nothing else gives a zero loss that still reaches every parameter (as DDP needs)."""
        readable = data_samples != BAD_IMAGE_LABEL
        if not readable.any():
            return dict(loss=self.model(inputs).sum() * 0.)
        return self.loss(inputs[readable], data_samples[readable])

    def loss(self, inputs: torch.Tensor, data_samples: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = data_samples
        if self.mixup_fn is not None:
            if len(inputs) % 2 == 0:
                inputs, target = self.mixup_fn(inputs, target)
            else:  # timm's Mixup needs an even batch; keep the soft, smoothed targets
                target = mixup_target(target, self.num_classes, smoothing=self.smoothing)
        logits = self.model(inputs)
        return dict(loss=self.train_loss(logits.float(), target))

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, data_samples: Optional[torch.Tensor] = None) -> List[dict]:
        scores = self.model(inputs).float().softmax(dim=-1)
        labels = scores.argmax(dim=-1)
        out = []
        for i in range(len(scores)):
            item = dict(pred_score=scores[i], pred_label=int(labels[i]))
            if data_samples is not None:
                item['gt_label'] = int(data_samples[i])
            out.append(item)
        return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
BAD_IMAGE_LABEL = -1  # the label of an unreadable image skipped by ImageNetFolder(on_bad_image='skip')
_ON_BAD_IMAGE = ('skip', 'error')
_BAD_IMAGES_LISTED = 5  # unreadable files named per dataset copy; the metric counts them all
# What Pillow raises for a file it cannot decode: not an image or empty (UnidentifiedImageError, an OSError),
# truncated (OSError), a broken chunk (SyntaxError), bad header values (ValueError), a decompression bomb.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _natural_key(s: str):
    import re
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', s)]


def _model_pretrained_cfg(model_name: Optional[str]) -> dict:
    if not model_name:
        return {}
    cfg = timm.models.get_pretrained_cfg(model_name)
    return cfg.to_dict() if cfg is not None else {}


@DATASETS.register_module()
class ImageNetFolder(torch.utils.data.Dataset):
    """ImageNet-style folder ``data_root/<split>/<class>/<image>`` with timm transforms.

    Args:
        data_root: folder holding the split folders.
        split: ``'train'`` / ``'val'`` (timm's split synonyms such as ``validation`` also resolve).
        is_training: random (training) transform; default ``split == 'train'``.
        model_name: timm model whose ``pretrained_cfg`` supplies input_size, mean, std,
            interpolation, crop_pct, crop_mode (what ``resolve_model_data_config`` reads).
        data_config: overrides of those keys (``input_size``, ``img_size``, ``mean``, ...).
        transform: further ``timm.data.create_transform`` kwargs (``auto_augment``, ``re_prob``,
            ``re_mode``, ``scale``, ``hflip``, ``color_jitter``, ``interpolation`` for training...).
            They win over ``data_config``.
        class_split: split whose sub-folders define the class list (so train and val agree
            even when a val class folder is missing).
        prepare: ``'sklearn_digits'`` (or ``dict(type='sklearn_digits', size=32, ...)``) writes
            that dataset into ``data_root`` first when ``data_root/train`` does not exist.
        input_img_mode: PIL mode the images are converted to.
        on_bad_image: what a file that cannot be decoded (empty, not an image, truncated) does: ``'skip'``
            (default) leaves it out and names it in a warning, ``'error'`` raises a ``ValueError`` naming it.

    Items are ``dict(inputs=CxHxW float tensor, data_samples=int label)``; use
    ``collate_fn=dict(type='default_collate')``.

    Unreadable files are found when they are loaded, not when the dataset is built: a header check of every file
    (``PIL.Image.open``) costs about 75 us per file with a warm page cache (1.6 min per run for ImageNet's 1.28 M
    training images, far more from a cold disk) and still passes truncated files, which only a full decode finds
    (about 5 ms per ImageNet-sized JPEG). With ``'skip'``, such a file's item is a marker: the transform of a blank
    image (so the batch still collates) with label ``BAD_IMAGE_LABEL``. ``TimmClassifier`` leaves marker rows out
    of the training loss, and ``ClsAccuracy`` out of the accuracy, reporting how many it left out; nothing stands
    in for the file, so no image counts twice in an evaluation. Each copy of the dataset (one per data-loader
    worker) names the first few unreadable files it meets in a warning.
    """

    def __init__(self, data_root: str, split: str = 'train', is_training: Optional[bool] = None,
                 model_name: Optional[str] = None, data_config: Optional[dict] = None,
                 transform: Optional[dict] = None, class_split: str = 'train',
                 prepare: Union[None, str, dict] = None, input_img_mode: str = 'RGB', on_bad_image: str = 'skip'):
        if on_bad_image not in _ON_BAD_IMAGE:
            raise ValueError(f'on_bad_image: expected one of {_ON_BAD_IMAGE}, got {on_bad_image!r}')
        if prepare:
            prepare_dataset('classification', data_root, prepare,
                            needed=not osp.isdir(osp.join(data_root, 'train')))
        if not osp.isdir(data_root):
            raise FileNotFoundError(
                f'data_root={data_root!r} does not exist; expected an ImageNet-style folder '
                f'{data_root}/{{train,val}}/<class>/<image>')
        self.data_root = data_root
        self.split = split
        self.input_img_mode = input_img_mode
        self.on_bad_image = on_bad_image
        self.bad_images_seen = 0  # by this copy of the dataset (a data-loader worker has its own)
        self.is_training = (split == 'train') if is_training is None else bool(is_training)

        class_dir = osp.join(data_root, class_split)
        if not osp.isdir(class_dir):
            class_dir = osp.join(data_root, split)
        if not osp.isdir(class_dir):
            raise FileNotFoundError(f'no {class_split!r} or {split!r} folder under data_root={data_root!r}')
        classes = sorted((d for d in os.listdir(class_dir) if osp.isdir(osp.join(class_dir, d))),
                         key=_natural_key)
        if not classes:
            raise FileNotFoundError(f'{class_dir!r} has no class sub-folders')
        self.class_to_idx = {c: i for i, c in enumerate(classes)}

        self.dataset = create_dataset('', root=data_root, split=split, is_training=self.is_training,
                                      class_map=self.class_to_idx, input_img_mode=input_img_mode)
        if len(self.dataset) == 0:
            raise FileNotFoundError(f'no images found for split={split!r} under data_root={data_root!r}')

        self.data_config = resolve_data_config(dict(data_config or {}),
                                               pretrained_cfg=_model_pretrained_cfg(model_name))
        tf_kwargs = {k: self.data_config[k] for k in
                     ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
                     if k in self.data_config}
        tf_kwargs.update(transform or {})
        allow_zero_bit_posterize()  # before the transform binds timm's RandAugment ops
        self.transform = create_transform(is_training=self.is_training, **tf_kwargs)
        self.metainfo = dict(classes=tuple(classes))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        file, target = self.dataset.reader[index]
        try:
            with file, Image.open(file) as im:
                img = im.convert(self.input_img_mode)
        except _DECODE_ERRORS as error:
            return self._bad_image(index, error)
        return dict(inputs=self.transform(img), data_samples=int(target))

    def _bad_image(self, index: int, error: Exception) -> dict:
        """The marker item of the unreadable image ``index`` (``on_bad_image='skip'``), or its error."""
        path = self.dataset.reader.filename(index, absolute=True)
        if self.on_bad_image == 'error':
            raise ValueError(f'{path}: not a readable image ({type(error).__name__}: {error}); '
                             f"on_bad_image='skip' leaves such files out") from error
        self.bad_images_seen += 1
        if self.bad_images_seen <= _BAD_IMAGES_LISTED:
            more = ' (no further ones are named)' if self.bad_images_seen == _BAD_IMAGES_LISTED else ''
            print_log(f'ImageNetFolder({self.split!r}): skipping unreadable image {path} ({type(error).__name__}: '
                      f'{error}){more}', logger='current', level=logging.WARNING)
        width_height = tuple(self.data_config['input_size'][:0:-1])
        blank = Image.new(self.input_img_mode, width_height)
        return dict(inputs=self.transform(blank), data_samples=BAD_IMAGE_LABEL)


# --------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------
@METRICS.register_module()
class ClsAccuracy(BaseMetric):
    """Top-k accuracy in percent (keys ``top1``, ``top5`` under the ``accuracy/`` prefix).

    ``k`` larger than the number of classes counts as always correct, like ``timm.utils.accuracy``
    would if it allowed it. Works distributed: mmengine gathers the per-sample flags of all ranks
    and trims the sampler's padding before ``compute_metrics``.
    """
    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f'topk must be positive ints, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """One result per sample, None for an unreadable image (label ``BAD_IMAGE_LABEL``): it keeps its place,
        so mmengine's ordering across ranks and its trimming of the sampler's padding stay right."""
        scores = torch.stack([s['pred_score'] for s in data_samples]).float()
        gt = torch.as_tensor([int(s['gt_label']) for s in data_samples], device=scores.device)
        maxk = min(max(self.topk), scores.shape[1])
        top = scores.topk(maxk, dim=1).indices
        hit = top.eq(gt[:, None])
        for i in range(len(gt)):
            readable = int(gt[i]) != BAD_IMAGE_LABEL
            self.results.append({k: bool(hit[i, :min(k, maxk)].any()) for k in self.topk} if readable else None)

    def compute_metrics(self, results: list) -> dict:
        """Top-k over the readable images; with unreadable ones also ``unreadable`` (their count), logged."""
        scored = [r for r in results if r is not None]
        n = max(len(scored), 1)
        metrics = {f'top{k}': 100.0 * sum(r[k] for r in scored) / n for k in self.topk}
        unreadable = len(results) - len(scored)
        if unreadable:
            print_log(f'ClsAccuracy: {unreadable} of {len(results)} images could not be read and are not counted '
                      f'(the dataset warnings name them)', logger='current', level=logging.WARNING)
            metrics['unreadable'] = unreadable
        return metrics


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TimmOptimWrapperConstructor:
    """Build the optimizer with ``timm.optim.create_optimizer_v2``.

    Config::

        optim_wrapper = dict(
            type='AutoAmpOptimWrapper',             # or 'OptimWrapper' / 'AmpOptimWrapper'
            constructor='TimmOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)),
            paramwise_cfg=dict(layer_decay=0.75),   # any other create_optimizer_v2 kwarg too
            clip_grad=dict(max_norm=5.0))

    ``optimizer.type`` (or ``opt``) is a timm optimizer name (case-insensitive: ``adamw``, ``lamb``,
    ``sgd``...). The optimizer is built on the timm network inside a :class:`TimmClassifier` (any
    model whose ``.model`` owns all parameters), so ``no_weight_decay()`` and ``group_matcher()``
    are the network's own. timm keeps layer-decay factors as ``lr_scale`` in each param group and
    applies them in its own schedulers; mmengine's schedulers do not know that key, so the scale
    is folded into the group's ``lr`` here (mmengine's schedulers then scale each group's
    initial lr, which keeps the ratio).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        self.optim_wrapper_cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        if 'optimizer' not in self.optim_wrapper_cfg:
            raise ValueError('optim_wrapper needs an `optimizer` dict, e.g. dict(type="AdamW", lr=1e-3)')
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))
        self.paramwise_cfg = dict(paramwise_cfg or {})

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):  # DDP / other wrappers
            model = model.module
        inner = getattr(model, 'model', None)
        if isinstance(inner, nn.Module) and \
                {id(p) for p in inner.parameters()} == {id(p) for p in model.parameters()}:
            model = inner
        opt_cfg = dict(self.optimizer_cfg)
        opt = opt_cfg.pop('opt', None) or opt_cfg.pop('type', None)
        opt_cfg.pop('type', None)
        if not isinstance(opt, str):
            raise ValueError(f'optimizer.type must be a timm optimizer name, got {opt!r}')
        if 'betas' in opt_cfg:
            opt_cfg['betas'] = tuple(opt_cfg['betas'])
        optimizer = create_optimizer_v2(model, opt=opt.lower(), **opt_cfg, **self.paramwise_cfg)
        for group in optimizer.param_groups:
            scale = group.get('lr_scale')
            if scale is not None and not group.get('_lr_scale_applied', False):
                group['lr'] = group['lr'] * scale
                group['_lr_scale_applied'] = True
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


@OPTIM_WRAPPERS.register_module()
class AutoAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` that also works on CPU.

    ``dtype=None`` picks float16 on CUDA (with a dynamic ``GradScaler``, as the papers' native AMP)
    and bfloat16 on CPU (the only CPU autocast dtype; no loss scaling). ``dtype='bfloat16'`` on
    CUDA also skips the scaler. mmengine's own ``AmpOptimWrapper`` refuses to start without an
    accelerator; everything else (autocast context, clipping after unscale, state dict) is its.
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[None, str, torch.dtype] = None, **kwargs):
        OptimWrapper.__init__(self, **kwargs)
        cuda = torch.cuda.is_available()
        if dtype is None:
            dtype = torch.float16 if cuda else torch.bfloat16
        if isinstance(dtype, str):
            if dtype not in ('float16', 'bfloat16'):
                raise ValueError(f"dtype must be 'float16', 'bfloat16' or None, got {dtype!r}")
            dtype = getattr(torch, dtype)
        if not cuda and dtype != torch.bfloat16:
            raise ValueError(f'CPU autocast supports only bfloat16, got dtype={dtype}')
        self.cast_dtype = dtype
        self._scale_update_param = None
        enabled = cuda and dtype == torch.float16
        device = 'cuda' if cuda else 'cpu'
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler(device, enabled=enabled)
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler(device, init_scale=loss_scale, enabled=enabled)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler(device, enabled=enabled, **loss_scale)
        else:
            raise TypeError(f'loss_scale must be "dynamic", a float or a dict, got {loss_scale!r}')


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------
def format_summary(metrics: Optional[dict], seconds: float, **extra) -> str:
    """``Final: top1=.. top5=.. <extra k=v ...> time=..s`` from an evaluator's metric dict."""
    metrics = metrics or {}
    parts = []
    for key in ('top1', 'top5'):
        value = find_metric(metrics, key)
        parts.append(f'{key}={float(value):.2f}' if value is not None else f'{key}=n/a')
    return final_line(parts, seconds, **extra)


@HOOKS.register_module()
class ClsSummaryHook(SummaryHook):
    """Log one summary line at the end of training (last val metrics, best top-1, epochs, wall
    time) and of testing."""
    best_name, best_fmt = 'best_top1', '.2f'

    def format(self, metrics: Optional[dict], seconds: float, **extra) -> str:
        """The ``Final:`` line; ``samples`` counts the images scored, ``unreadable`` the ones left out."""
        unreadable = find_metric(metrics or {}, 'unreadable')
        if unreadable:
            extra = dict(extra, unreadable=int(unreadable))
            if 'samples' in extra:
                extra['samples'] -= int(unreadable)
        return format_summary(metrics, seconds, **extra)

    def best_candidate(self, metrics: dict) -> Optional[float]:
        return next((v for k, v in metrics.items() if k.endswith('top1')), None)
