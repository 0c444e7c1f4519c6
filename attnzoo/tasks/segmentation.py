"""Semantic segmentation on mmengine's Runner: UPerNet and semantic FPN on any attnzoo / timm backbone.

* ``MODELS``: :class:`EncoderDecoderSegmentor` -- :class:`~attnzoo.models.dense.DenseBackbone` +
  ``decode_head='uper'`` (:class:`UPerHead`: pyramid pooling on C5 + FPN fusion, 512 channels, dropout 0.1, as
  mmseg's ``UPerHead``) with the auxiliary :class:`FCNHead` on C4 (weight 0.4), or ``'fpn'``
  (:class:`SemanticFPNHead`: FPN neck 256 + Kirillov's head, 128 channels); cross-entropy with ignore index 255;
  ``test_mode='whole'`` or ``'slide'`` (``crop_size`` windows at ``stride``, logits averaged), logits resized to
  the label's size.
* ``DATASETS``: :class:`SegFolderDataset` -- ADE20K's layout (``images/{training,validation}/*.jpg``,
  ``annotations/{training,validation}/*.png``), ``reduce_zero_label``; training: random rescale of the
  ``scale`` (2048, 512) by 0.5-2.0, 512x512 random crop (``cat_max_ratio`` 0.75), flip, photometric distortion,
  pad (image 0, label 255); testing: keep-ratio resize to ``scale``, the label at its own size.
  ``prepare='tiny_shapes'`` writes a small synthetic set in that layout
  (:func:`~attnzoo.tasks.demo_data.write_tiny_seg`).
* ``METRICS``: :class:`IoUMetric` -- mmseg's: areas summed over the dataset, then ``mIoU``, ``mAcc``, ``aAcc``
  (percent), classes absent from both GT and prediction skipped.
* ``FUNCTIONS``: ``seg_collate``.
"""
from __future__ import annotations

import os
import os.path as osp
import random
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, FUNCTIONS, METRICS, MODELS
from torchvision.ops import FeaturePyramidNetwork

from ..models.dense import DenseBackbone
from ._common import list_collate, model_mean_std
from .demo_data import prepare_dataset

__all__ = ['ConvBNReLU', 'UPerHead', 'FCNHead', 'SemanticFPNHead', 'EncoderDecoderSegmentor', 'SegFolderDataset',
           'IoUMetric', 'seg_collate', 'intersect_and_union', 'reduce_zero_label']


# --------------------------------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------------------------------
class ConvBNReLU(nn.Sequential):
    """mmcv's ``ConvModule`` (conv without bias + BN + ReLU); BN becomes SyncBN with mmengine's ``sync_bn``."""

    def __init__(self, cin: int, cout: int, k: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class UPerHead(nn.Module):
    """UPerNet's head (mmseg ``UPerHead``): PPM (pool scales 1/2/3/6) on the last map, laterals + top-down FPN, all
    levels resized to the first map's stride, concatenated, fused by a 3x3 conv; dropout, 1x1 classifier."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        in_channels = list(in_channels)
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_channels[-1], channels))
                                 for s in pool_scales)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        ppm = [top] + [_resize(m(top), top.shape[2:]) for m in self.ppm]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1])] + [self.bottleneck(torch.cat(ppm, 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, 1))))


class FCNHead(nn.Module):
    """mmseg ``FCNHead`` as UPerNet's auxiliary head: ``num_convs`` 3x3 ConvBNReLU, dropout, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, num_convs: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(*[ConvBNReLU(in_channels if i == 0 else channels, channels, 3)
                                     for i in range(num_convs)])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


class SemanticFPNHead(nn.Module):
    """Semantic FPN (Kirillov et al.; mmseg ``FPN`` neck + ``FPNHead``): FPN to ``fpn_channels``, then per level
    ``max(1, log2(stride / strides[0]))`` 3x3 ConvBNReLU (+2x upsampling each) to ``channels``, summed at the
    finest stride; dropout, 1x1 classifier."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int, fpn_channels: int = 256,
                 channels: int = 128, dropout: float = 0.1):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(list(in_channels), fpn_channels)
        self.scale_heads = nn.ModuleList()
        for s in strides:
            n = max(1, int(np.log2(s) - np.log2(strides[0])))
            layers = []
            for k in range(n):
                layers.append(ConvBNReLU(fpn_channels if k == 0 else channels, channels, 3))
                if s != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        from collections import OrderedDict
        maps = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
        out = self.scale_heads[0](maps[0])
        for head, m in zip(self.scale_heads[1:], maps[1:]):
            out = out + _resize(head(m), out.shape[2:])
        return self.conv_seg(self.dropout(out))


# --------------------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------------------
@MODELS.register_module()
class EncoderDecoderSegmentor(BaseModel):
    """Backbone + decode head (+ auxiliary head) as an mmengine model.

    Args:
        backbone: :class:`DenseBackbone` kwargs (``model_name``, ``dense_preset='ade20k'``, ``model_kwargs``...).
        num_classes: classes (150 on ADE20K after ``reduce_zero_label``).
        decode_head: ``'uper'`` or ``'fpn'``; ``head_channels`` (512 / 128 by default), ``dropout``.
        aux_head: auxiliary FCN head on map ``aux_in_index`` (UPerNet: C4, 256 channels, ``aux_weight`` 0.4);
            default on for ``'uper'``.
        ignore_index: label ignored by the loss (255).
        test_mode: ``'whole'`` or ``'slide'`` (``crop_size`` (H, W) windows every ``stride`` (H, W) pixels).
        image_mean / image_std: 0-1 scale; default from the backbone's timm ``pretrained_cfg``.
        size_divisor: pad the batch to a multiple of it (image 0, label ``ignore_index``); 32 by default.

    ``forward(inputs, data_samples, mode)``: ``inputs`` a list of ``[3, H, W]`` float 0-1 images, ``data_samples``
    a list of ``dict(gt_seg=[H', W'] int64)`` (the label at its own size: predictions are resized to it).
    ``'loss'`` -> ``dict(loss_ce=..., loss_aux=...)``; ``'predict'`` -> ``dict(pred=[H', W'], gt=...)`` per image;
    ``'tensor'`` -> logits at the head's stride.
    """

    def __init__(self, backbone: dict, num_classes: int = 150, decode_head: str = 'uper',
                 head_channels: Optional[int] = None, dropout: float = 0.1, aux_head: Optional[bool] = None,
                 aux_in_index: int = 2, aux_channels: int = 256, aux_weight: float = 0.4, ignore_index: int = 255,
                 test_mode: str = 'whole', crop_size: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341),
                 image_mean: Optional[Sequence[float]] = None, image_std: Optional[Sequence[float]] = None,
                 size_divisor: int = 32, data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if decode_head not in ('uper', 'fpn'):
            raise ValueError(f"decode_head must be 'uper' or 'fpn', got {decode_head!r}")
        if test_mode not in ('whole', 'slide'):
            raise ValueError(f"test_mode must be 'whole' or 'slide', got {test_mode!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        self.backbone = DenseBackbone(**backbone)
        ch, strides = self.backbone.channels, self.backbone.strides
        if decode_head == 'uper':
            self.decode_head = UPerHead(ch, num_classes, head_channels or 512, dropout=dropout)
        else:
            self.decode_head = SemanticFPNHead(ch, strides, num_classes, channels=head_channels or 128,
                                               dropout=dropout)
        aux_head = decode_head == 'uper' if aux_head is None else aux_head
        self.aux_head = FCNHead(ch[aux_in_index], num_classes, aux_channels, dropout=dropout) if aux_head else None
        self.aux_in_index, self.aux_weight = aux_in_index, float(aux_weight)
        self.num_classes, self.ignore_index = num_classes, int(ignore_index)
        self.test_mode, self.crop_size, self.stride = test_mode, tuple(crop_size), tuple(stride)
        self.size_divisor = int(size_divisor)
        image_mean, image_std = model_mean_std(backbone['model_name'], image_mean, image_std)
        self.register_buffer('image_mean', torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer('image_std', torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1), False)

    def init_weights(self):
        # heads keep PyTorch's default init (mmseg: normal(0, 0.01) on conv_seg only); backbone: its init_cfg
        nn.init.normal_(self.decode_head.conv_seg.weight, 0, 0.01)
        if self.aux_head is not None:
            nn.init.normal_(self.aux_head.conv_seg.weight, 0, 0.01)
        self.backbone.init_weights()

    def _batch(self, inputs: Sequence[torch.Tensor], labels: Optional[Sequence[torch.Tensor]] = None):
        """Normalise and pad to a common size (multiple of ``size_divisor``)."""
        H = max(x.shape[-2] for x in inputs)
        W = max(x.shape[-1] for x in inputs)
        d = self.size_divisor
        H, W = -(-H // d) * d, -(-W // d) * d
        imgs = torch.stack([F.pad((x - self.image_mean) / self.image_std, (0, W - x.shape[-1], 0, H - x.shape[-2]))
                            for x in inputs])
        if labels is None:
            return imgs, None
        segs = torch.stack([F.pad(y, (0, W - y.shape[-1], 0, H - y.shape[-2]), value=self.ignore_index)
                            for y in labels])
        return imgs, segs

    def encode_decode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]`` of normalised images, at the input size."""
        return _resize(self.decode_head(self.backbone(imgs)), imgs.shape[2:])

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs)
        if mode == 'loss':
            labels = [s['gt_seg'] for s in data_samples]
            imgs, segs = self._batch(inputs, labels)
            feats = self.backbone(imgs)
            logits = _resize(self.decode_head(feats), segs.shape[1:])
            losses = dict(loss_ce=F.cross_entropy(logits, segs, ignore_index=self.ignore_index))
            if self.aux_head is not None:
                aux = _resize(self.aux_head(feats[self.aux_in_index]), segs.shape[1:])
                losses['loss_aux'] = self.aux_weight * F.cross_entropy(aux, segs, ignore_index=self.ignore_index)
            return losses
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.decode_head(self.backbone(self._batch(inputs)[0]))
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def slide_logits(self, img: torch.Tensor) -> torch.Tensor:
        """mmseg's ``slide_inference`` on one normalised image ``[1, 3, H, W]``: windows of ``crop_size`` every
        ``stride``, the last window of each axis aligned to the border, logits averaged where windows overlap."""
        (hc, wc), (hs, ws) = self.crop_size, self.stride
        _, _, H, W = img.shape
        nh = max(H - hc + hs - 1, 0) // hs + 1
        nw = max(W - wc + ws - 1, 0) // ws + 1
        logits = img.new_zeros((1, self.num_classes, H, W))
        count = img.new_zeros((1, 1, H, W))
        for i in range(nh):
            for j in range(nw):
                y1, x1 = i * hs, j * ws
                y2, x2 = min(y1 + hc, H), min(x1 + wc, W)
                y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
                crop = img[:, :, y1:y2, x1:x2]
                ph, pw = (-crop.shape[2]) % self.size_divisor, (-crop.shape[3]) % self.size_divisor
                out = self.encode_decode(F.pad(crop, (0, pw, 0, ph)))[:, :, :crop.shape[2], :crop.shape[3]]
                logits[:, :, y1:y2, x1:x2] += out
                count[:, :, y1:y2, x1:x2] += 1
        return logits / count

    @torch.no_grad()
    def predict(self, inputs, data_samples=None) -> List[dict]:
        results = []
        for i, x in enumerate(inputs):
            img = ((x - self.image_mean) / self.image_std)[None]
            if self.test_mode == 'slide':
                logits = self.slide_logits(img)
            else:
                d = self.size_divisor
                H, W = img.shape[2:]
                padded = F.pad(img, (0, (-W) % d, 0, (-H) % d))
                logits = self.encode_decode(padded)[:, :, :H, :W]
            gt = data_samples[i].get('gt_seg') if data_samples is not None else None
            out_size = gt.shape[-2:] if gt is not None else logits.shape[2:]
            pred = _resize(logits, out_size).argmax(1)[0]
            item = dict(pred=pred.cpu())
            if gt is not None:
                item['gt'] = gt.cpu()
            results.append(item)
        return results


seg_collate = FUNCTIONS.register_module(name='seg_collate', module=list_collate)  # test images differ in size


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------
def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """ADE20K: 0 ("other") becomes 255 (ignored), 1..150 become 0..149 (mmseg's ``reduce_zero_label``)."""
    label = label.astype(np.int64)
    label[label == 0] = 255
    label = label - 1
    label[label == 254] = 255
    return label


def _photometric(img: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion`` on a 0-255 float ``[3, H, W]``: each with prob. 0.5, brightness
    +-32, contrast x0.5-1.5 (before or after the rest), saturation x0.5-1.5, hue +-18 degrees."""
    import torchvision.transforms.v2.functional as TF

    if rng.random() < 0.5:
        img = img + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    c = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if c is not None and contrast_first:
        img = img * c
    x = img.clamp(0, 255) / 255.0
    if rng.random() < 0.5:
        x = TF.adjust_saturation(x, rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        x = TF.adjust_hue(x, rng.uniform(-18, 18) / 360.0)
    img = x * 255.0
    if c is not None and not contrast_first:
        img = img * c
    return img.clamp(0, 255)


@DATASETS.register_module()
class SegFolderDataset(torch.utils.data.Dataset):
    """ADE20K-style folders: ``data_root/img_dir/split/*img_suffix`` with labels in
    ``data_root/ann_dir/split/<same stem>seg_map_suffix``.

    Args:
        split: ``'training'`` / ``'validation'``.
        reduce_zero_label: label 0 -> ignored, others shifted down by one (ADE20K).
        training: random pipeline (default: ``split == 'training'``).
        scale: (long, short) target scale (mmseg ``Resize(scale=(2048, 512), keep_ratio=True)``): the image is
            resized so that it fits in it; ``ratio_range`` (training) multiplies the scale first.
        crop_size: (H, W) training crop; ``cat_max_ratio``: retry (10 times) crops where one class covers more.
        flip_prob / photometric: training augmentation.
        prepare: ``'tiny_shapes'`` writes :func:`~attnzoo.tasks.demo_data.write_tiny_seg` into ``data_root``
            when it is missing.

    Items: ``dict(inputs=[3, H, W] float 0-1, data_samples=dict(gt_seg=[H', W'] int64, img_path))``; in training
    the label has the crop's size (padded with 255), in testing the original size.
    """

    def __init__(self, data_root: str, split: str = 'training', img_dir: str = 'images', ann_dir: str = 'annotations',
                 img_suffix: str = '.jpg', seg_map_suffix: str = '.png', reduce_zero_label: bool = True,
                 training: Optional[bool] = None, scale: Sequence[int] = (2048, 512),
                 ratio_range: Sequence[float] = (0.5, 2.0), crop_size: Sequence[int] = (512, 512),
                 cat_max_ratio: float = 0.75, flip_prob: float = 0.5, photometric: bool = True,
                 ignore_index: int = 255, prepare: Union[None, str, dict] = None):
        if prepare and not osp.isdir(osp.join(data_root, img_dir, split)):
            prepare_dataset('segmentation', data_root, prepare)
        img_root = osp.join(data_root, img_dir, split)
        ann_root = osp.join(data_root, ann_dir, split)
        if not osp.isdir(img_root) or not osp.isdir(ann_root):
            raise FileNotFoundError(f'expected {img_root!r} and {ann_root!r} (ADE20K layout: '
                                    f'{img_dir}/{{training,validation}}, {ann_dir}/{{training,validation}})')
        stems = sorted(f[:-len(img_suffix)] for f in os.listdir(img_root) if f.endswith(img_suffix))
        self.items = [(osp.join(img_root, s + img_suffix), osp.join(ann_root, s + seg_map_suffix)) for s in stems
                      if osp.isfile(osp.join(ann_root, s + seg_map_suffix))]
        if not self.items:
            raise FileNotFoundError(f'no image/label pairs (*{img_suffix} / *{seg_map_suffix}) under {data_root!r}')
        self.training = split == 'training' if training is None else bool(training)
        self.reduce_zero_label = reduce_zero_label
        self.scale, self.ratio_range, self.crop_size = tuple(scale), tuple(ratio_range), tuple(crop_size)
        self.cat_max_ratio, self.flip_prob, self.photometric = cat_max_ratio, flip_prob, photometric
        self.ignore_index = ignore_index
        self.metainfo = dict(reduce_zero_label=reduce_zero_label)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _rescale_size(h: int, w: int, scale: Tuple[float, float]) -> Tuple[int, int]:
        long_edge, short_edge = max(scale), min(scale)
        f = min(long_edge / max(h, w), short_edge / min(h, w))
        return int(h * f + 0.5), int(w * f + 0.5)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        img_path, seg_path = self.items[index]
        with Image.open(img_path) as im:
            img = torch.from_numpy(np.asarray(im.convert('RGB'), dtype=np.uint8).copy()).permute(2, 0, 1).float()
        with Image.open(seg_path) as im:
            seg = np.asarray(im, dtype=np.uint8)
        seg = reduce_zero_label(seg) if self.reduce_zero_label else seg.astype(np.int64)
        seg = torch.from_numpy(seg)
        h, w = img.shape[1:]
        if not self.training:
            nh, nw = self._rescale_size(h, w, self.scale)
            img = F.interpolate(img[None], size=(nh, nw), mode='bilinear', align_corners=False)[0]
            return dict(inputs=(img.clamp(0, 255) / 255.0), data_samples=dict(gt_seg=seg, img_path=img_path))

        rng = random.Random(torch.randint(0, 2 ** 31, ()).item())
        r = rng.uniform(*self.ratio_range)
        nh, nw = self._rescale_size(h, w, (self.scale[0] * r, self.scale[1] * r))
        img = F.interpolate(img[None], size=(nh, nw), mode='bilinear', align_corners=False)[0]
        seg = F.interpolate(seg[None, None].float(), size=(nh, nw), mode='nearest')[0, 0].long()
        ch, cw = self.crop_size
        for _ in range(10):
            y = rng.randint(0, max(nh - ch, 0))
            x = rng.randint(0, max(nw - cw, 0))
            crop = seg[y:y + ch, x:x + cw]
            vals, counts = torch.unique(crop[crop != self.ignore_index], return_counts=True)
            if self.cat_max_ratio >= 1 or len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        img, seg = img[:, y:y + ch, x:x + cw], seg[y:y + ch, x:x + cw]
        if rng.random() < self.flip_prob:
            img, seg = img.flip(-1), seg.flip(-1)
        if self.photometric:
            img = _photometric(img, rng)
        ph, pw = ch - img.shape[1], cw - img.shape[2]
        img = F.pad(img, (0, pw, 0, ph))
        seg = F.pad(seg, (0, pw, 0, ph), value=self.ignore_index)
        return dict(inputs=img / 255.0, data_samples=dict(gt_seg=seg, img_path=img_path))


# --------------------------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------------------------
def intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """Per-class intersection, union, predicted and label areas of one image (mmseg's ``intersect_and_union``)."""
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]
    bins = dict(bins=num_classes, min=0, max=num_classes - 1)
    area_i = torch.histc(intersect.float(), **bins)
    area_p = torch.histc(pred.float(), **bins)
    area_l = torch.histc(label.float(), **bins)
    return area_i, area_p + area_l - area_i, area_p, area_l


@METRICS.register_module()
class IoUMetric(BaseMetric):
    """mmseg's ``IoUMetric``: areas summed over the dataset, ``mIoU`` / ``mAcc`` = nan-mean over classes of
    I/U and I/label, ``aAcc`` = sum I / sum label, in percent; per-class IoU in the log."""

    def __init__(self, num_classes: int, ignore_index: int = 255, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append(intersect_and_union(s['pred'], s['gt'], self.num_classes, self.ignore_index))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        from mmengine.logging import MMLogger
        i, u, p, lab = (torch.stack([r[k] for r in results]).sum(0).double() for k in range(4))
        iou, acc = i / u, i / lab
        MMLogger.get_current_instance().info('per-class IoU: ' + ' '.join(f'{v * 100:.1f}' for v in iou.tolist()))
        return dict(aAcc=float(i.sum() / lab.sum() * 100), mIoU=float(np.nanmean(iou.numpy()) * 100),
                    mAcc=float(np.nanmean(acc.numpy()) * 100))
