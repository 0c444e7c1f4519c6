"""Object detection and instance segmentation on mmengine's Runner with torchvision's detectors.

Every detector sits on :class:`~attnzoo.models.dense.DenseBackbone` (any attnzoo / timm model's
``features_only`` maps, the paper's dense settings by ``dense_preset``) and torchvision's FPN:

* ``MODELS``: :class:`TorchvisionDetector` -- ``detector='faster_rcnn' | 'mask_rcnn' | 'retinanet' | 'fcos' |
  'cascade_mask_rcnn'`` (:func:`build_detector`); the cascade is assembled here from torchvision parts
  (:class:`CascadeRoIHeads`: 3 stages at IoU 0.5 / 0.6 / 0.7, 4conv1fc heads, GIoU loss, stage weights
  1 / 0.5 / 0.25, scores averaged over the stages at test time, as mmdet's Cascade Mask R-CNN). Inputs of any
  size: torchvision's transform resizes (a tuple ``min_size`` draws one size per training batch: multi-scale
  training) and pads the batch to ``size_divisible``; the attention layers pad internally where their windows
  need it.
* ``DATASETS``: :class:`CocoDetDataset` -- a COCO json (``pycocotools``) with polygon / RLE masks, horizontal
  flip; ``prepare='tiny_shapes'`` writes a small synthetic COCO set
  (:func:`~attnzoo.tasks.demo_data.write_tiny_coco`).
* ``METRICS``: :class:`CocoMetric` -- COCO bbox / segm AP from ``pycocotools``' ``COCOeval``
  (``coco/bbox_mAP``, ``coco/bbox_mAP_50``, ..., as mmdet names them).
* ``FUNCTIONS``: ``det_collate`` (keeps the per-image targets a list); ``HOOKS``: :class:`DenseSummaryHook`.

``pycocotools`` is the ``[det]`` extra (``pip install attnzoo[det]``).
"""
from __future__ import annotations

import contextlib
import io
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, FUNCTIONS, HOOKS, METRICS, MODELS
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, boxes as box_ops
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..models.dense import DenseBackbone
from ._common import SummaryHook, final_line, find_metric, list_collate, model_mean_std
from .demo_data import prepare_dataset

__all__ = ['FPNBackbone', 'CascadeRoIHeads', 'build_detector', 'TorchvisionDetector', 'CocoDetDataset',
           'CocoMetric', 'DenseSummaryHook', 'det_collate', 'DETECTORS']

DETECTORS = ('faster_rcnn', 'mask_rcnn', 'retinanet', 'fcos', 'cascade_mask_rcnn')


# --------------------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------------------
class FPNBackbone(nn.Module):
    """:class:`DenseBackbone` + torchvision ``FeaturePyramidNetwork``: ``forward(x) -> OrderedDict`` of
    ``out_channels`` maps named ``'0', '1', ...`` (+ ``'pool'`` or ``'p6', 'p7'``), what torchvision's detectors
    take as a backbone.

    ``extra``: ``'maxpool'`` (P6 by max-pooling P5: Faster / Mask R-CNN), ``'p6p7'`` (P6/P7 convs from C5:
    RetinaNet, mmdet ``add_extra_convs='on_input'``), ``'p6p7_out'`` (from P5: FCOS, ``'on_output'``) or None.
    """

    def __init__(self, backbone: Union[dict, DenseBackbone], out_channels: int = 256, extra: Optional[str] = 'maxpool'):
        super().__init__()
        self.body = backbone if isinstance(backbone, DenseBackbone) else DenseBackbone(**backbone)
        in_channels = list(self.body.channels)
        if extra == 'maxpool':
            extra_block = LastLevelMaxPool()
        elif extra == 'p6p7':
            extra_block = LastLevelP6P7(in_channels[-1], out_channels)
        elif extra == 'p6p7_out':
            extra_block = LastLevelP6P7(out_channels, out_channels)
        elif extra is None:
            extra_block = None
        else:
            raise ValueError(f"extra must be 'maxpool', 'p6p7', 'p6p7_out' or None, got {extra!r}")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_block)
        self.out_channels = out_channels
        self.num_levels = len(in_channels) + (0 if extra is None else 1 if extra == 'maxpool' else 2)

    def forward(self, x: torch.Tensor) -> 'OrderedDict[str, torch.Tensor]':
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class CascadeRoIHeads(nn.Module):
    """Cascade R-CNN box stages (+ a mask head on the last stage) from torchvision's ``RoIHeads`` parts.

    Each stage is a ``RoIHeads`` (its matcher at ``iou_thresholds[t]``, box coder ``bbox_reg_weights[t]``, head,
    predictor); training samples ``batch_size_per_image`` RoIs per image per stage from the previous stage's
    refined boxes (GT boxes are added for sampling and removed before refinement, as mmdet does), losses are
    weighted by ``stage_loss_weights``. Test: each stage refines the boxes of the previous one with its arg-max
    foreground class, class scores are averaged over the stages, boxes come from the last stage. Differences
    from mmdet's Cascade Mask R-CNN: one mask head (on the last stage's RoIs) instead of one per stage, and
    torchvision's ``roi_align(aligned=False)``.
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_heads: Sequence[nn.Module],
                 box_predictors: Sequence[nn.Module], iou_thresholds: Sequence[float] = (0.5, 0.6, 0.7),
                 bbox_reg_weights: Sequence[Sequence[float]] = ((10., 10., 5., 5.), (20., 20., 10., 10.),
                                                                (30., 30., 15., 15.)),
                 stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25), batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, box_loss: str = 'giou', giou_weight: float = 10.0,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 mask_roi_pool: Optional[MultiScaleRoIAlign] = None, mask_head: Optional[nn.Module] = None,
                 mask_predictor: Optional[nn.Module] = None):
        super().__init__()
        n = len(box_heads)
        if not (len(box_predictors) == len(iou_thresholds) == len(bbox_reg_weights) == len(stage_loss_weights) == n):
            raise ValueError(f'CascadeRoIHeads: box_heads, box_predictors, iou_thresholds, bbox_reg_weights and '
                             f'stage_loss_weights need one entry per stage ({n})')
        if box_loss not in ('giou', 'smooth_l1'):
            raise ValueError(f"box_loss must be 'giou' or 'smooth_l1', got {box_loss!r}")
        self.stages = nn.ModuleList(
            RoIHeads(box_roi_pool, head, pred, t, t, batch_size_per_image, positive_fraction, w,
                     score_thresh, nms_thresh, detections_per_img)
            for head, pred, t, w in zip(box_heads, box_predictors, iou_thresholds, bbox_reg_weights))
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.box_loss, self.giou_weight = box_loss, float(giou_weight)
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor

    def has_mask(self) -> bool:
        return self.mask_head is not None

    @staticmethod
    def _sample(stage: RoIHeads, proposals, targets):
        """torchvision's ``select_training_samples`` that also says which sampled RoIs are GT boxes."""
        dtype = proposals[0].dtype
        gt_boxes = [t['boxes'].to(dtype) for t in targets]
        gt_labels = [t['labels'] for t in targets]
        n_props = [len(p) for p in proposals]
        proposals = stage.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = stage.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled = stage.subsample(labels)
        out_props, out_matched, out_labels, is_gt, matched_gt = [], [], [], [], []
        for i, inds in enumerate(sampled):
            out_props.append(proposals[i][inds])
            out_labels.append(labels[i][inds])
            out_matched.append(matched_idxs[i][inds])
            is_gt.append(inds >= n_props[i])
            boxes = gt_boxes[i] if gt_boxes[i].numel() else torch.zeros((1, 4), dtype=dtype,
                                                                         device=out_props[-1].device)
            matched_gt.append(boxes[out_matched[-1]])
        return out_props, out_matched, out_labels, is_gt, matched_gt

    def _box_losses(self, stage: RoIHeads, class_logits, box_regression, proposals, labels, matched_gt):
        if self.box_loss == 'smooth_l1':
            targets = stage.box_coder.encode(matched_gt, proposals)
            return fastrcnn_loss(class_logits, box_regression, labels, targets)
        labels = torch.cat(labels)
        loss_cls = F.cross_entropy(class_logits, labels)
        pos = torch.where(labels > 0)[0]
        if pos.numel() == 0:
            return loss_cls, box_regression.sum() * 0
        deltas = box_regression.reshape(len(labels), -1, 4)[pos, labels[pos]]
        pred = stage.box_coder.decode_single(deltas, torch.cat(proposals)[pos])
        loss_box = generalized_box_iou_loss(pred, torch.cat(matched_gt)[pos], reduction='sum') / labels.numel()
        return loss_cls, self.giou_weight * loss_box

    @staticmethod
    def _refine(stage: RoIHeads, class_logits, box_regression, proposals, image_shapes, labels=None):
        """Decode each RoI with the regression of its class (the sampled label in training, else the arg-max
        foreground class), clipped to the image; detached."""
        counts = [len(p) for p in proposals]
        boxes = stage.box_coder.decode(box_regression, proposals)  # [N, C, 4]
        cls = torch.cat(labels) if labels is not None else None
        fg_argmax = class_logits[:, 1:].argmax(dim=1) + 1
        cls = fg_argmax if cls is None else torch.where(cls > 0, cls, fg_argmax)
        boxes = boxes[torch.arange(len(boxes), device=boxes.device), cls]
        out = []
        for b, shape in zip(boxes.split(counts), image_shapes):
            out.append(box_ops.clip_boxes_to_image(b, shape).detach())
        return out

    def forward(self, features, proposals, image_shapes, targets=None):
        losses = {}
        last = len(self.stages) - 1
        if self.training:
            if targets is None:
                raise ValueError('CascadeRoIHeads: targets are required in training')
            for t, stage in enumerate(self.stages):
                props, matched, labels, is_gt, matched_gt = self._sample(stage, proposals, targets)
                feats = stage.box_head(stage.box_roi_pool(features, props, image_shapes))
                class_logits, box_regression = stage.box_predictor(feats)
                loss_cls, loss_box = self._box_losses(stage, class_logits, box_regression, props, labels, matched_gt)
                w = self.stage_loss_weights[t]
                losses[f'loss_classifier_s{t}'] = w * loss_cls
                losses[f'loss_box_reg_s{t}'] = w * loss_box
                if t == last and self.has_mask():
                    pos = [torch.where(lab > 0)[0] for lab in labels]
                    pos_props = [p[i] for p, i in zip(props, pos)]
                    pos_matched = [m[i] for m, i in zip(matched, pos)]
                    mask_logits = self.mask_predictor(self.mask_head(
                        self.mask_roi_pool(features, pos_props, image_shapes)))
                    gt_masks = [tg['masks'] for tg in targets]
                    gt_labels = [tg['labels'] for tg in targets]
                    losses['loss_mask'] = w * maskrcnn_loss(mask_logits, pos_props, gt_masks, gt_labels, pos_matched)
                elif t < last:
                    refined = self._refine(stage, class_logits, box_regression, props, image_shapes, labels)
                    proposals = [r[~g] for r, g in zip(refined, is_gt)]
            return [], losses

        scores = []
        for t, stage in enumerate(self.stages):
            feats = stage.box_head(stage.box_roi_pool(features, proposals, image_shapes))
            class_logits, box_regression = stage.box_predictor(feats)
            scores.append(F.softmax(class_logits, dim=-1))
            if t < last:
                proposals = self._refine(stage, class_logits, box_regression, proposals, image_shapes)
        mean_scores = torch.stack(scores).mean(0)
        boxes, det_scores, labels = self.stages[last].postprocess_detections(
            torch.log(mean_scores.clamp_min(1e-12)), box_regression, proposals, image_shapes)
        result = [dict(boxes=b, labels=lab, scores=s) for b, s, lab in zip(boxes, det_scores, labels)]
        if self.has_mask():
            mask_props = [r['boxes'] for r in result]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_props, image_shapes)))
            for r, m in zip(result, maskrcnn_inference(mask_logits, [r['labels'] for r in result])):
                r['masks'] = m
        return result, losses


def _rcnn_anchors(num_maps: int, base: int = 32, scales_per_octave: int = 1, ratios=(0.5, 1.0, 2.0)):
    sizes = tuple(tuple(int(base * 2 ** i * 2 ** (j / scales_per_octave)) for j in range(scales_per_octave))
                  for i in range(num_maps))
    return AnchorGenerator(sizes, (tuple(ratios),) * num_maps)


def _box_head(kind: str, channels: int, pool: int = 7, norm: Optional[str] = 'bn') -> Tuple[nn.Module, int]:
    if kind == '2fc':
        return TwoMLPHead(channels * pool * pool, 1024), 1024
    if kind == '4conv1fc':
        norm_layer = {'bn': nn.BatchNorm2d, 'gn': lambda c: nn.GroupNorm(32, c), None: None}[norm]
        return FastRCNNConvFCHead((channels, pool, pool), [channels] * 4, [1024], norm_layer=norm_layer), 1024
    raise ValueError(f"box_head must be '2fc' or '4conv1fc', got {kind!r}")


def build_detector(detector: str, backbone: dict, num_classes: int, fpn_channels: int = 256,
                   min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333, size_divisible: int = 32,
                   image_mean: Optional[Sequence[float]] = None, image_std: Optional[Sequence[float]] = None,
                   box_head: Optional[str] = None, box_head_norm: Optional[str] = 'bn', **kwargs) -> nn.Module:
    """A torchvision detector on ``DenseBackbone(**backbone)`` + FPN.

    Args:
        detector: one of :data:`DETECTORS`.
        backbone: :class:`DenseBackbone` kwargs (``model_name``, ``out_indices``, ``dense_preset``,
            ``model_kwargs``, ``frozen_stages``, ``init_cfg``...). R-CNNs default to strides 4-32, RetinaNet/FCOS to
            8-32 (``out_indices=(1, 2, 3)``).
        num_classes: object classes without background (labels are 1..num_classes, 0 is background).
        fpn_channels: FPN width (256 in the papers).
        min_size / max_size: torchvision's resize (short side, long-side cap); a tuple ``min_size`` picks one per
            training batch (multi-scale training), the last entry is used for evaluation.
        size_divisible: the batch is padded to a multiple of it.
        image_mean / image_std: 0-1 scale; default from the backbone's timm ``pretrained_cfg``.
        box_head: ``'2fc'`` (torchvision's default for Faster / Mask R-CNN) or ``'4conv1fc'`` (Cascade default,
            with ``box_head_norm`` ``'bn'`` / ``'gn'`` / None).
        **kwargs: the torchvision detector's own kwargs (``rpn_post_nms_top_n_train``, ``box_score_thresh``,
            ``box_batch_size_per_image``, ``detections_per_img``, ...); for the cascade also
            :class:`CascadeRoIHeads` kwargs prefixed ``cascade_`` (``cascade_box_loss='smooth_l1'``, ...).
    """
    if detector not in DETECTORS:
        raise ValueError(f'detector={detector!r} is unknown; valid: {DETECTORS}')
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f'num_classes must be a positive int (without background), got {num_classes!r}')
    backbone = dict(backbone)
    if 'model_name' not in backbone:
        raise ValueError('backbone needs a model_name (any timm model; `import attnzoo` adds the zoo)')
    one_stage = detector in ('retinanet', 'fcos')
    backbone.setdefault('out_indices', (1, 2, 3) if one_stage else (0, 1, 2, 3))
    image_mean, image_std = model_mean_std(backbone['model_name'], image_mean, image_std)
    transform = dict(min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
                     size_divisible=size_divisible)
    extra = {'retinanet': 'p6p7', 'fcos': 'p6p7_out'}.get(detector, 'maxpool')
    fpn = FPNBackbone(backbone, fpn_channels, extra)
    names = [str(i) for i in range(len(fpn.body.channels))]
    n_maps = fpn.num_levels
    cascade_kwargs = {k[len('cascade_'):]: kwargs.pop(k) for k in list(kwargs) if k.startswith('cascade_')}
    if cascade_kwargs and detector != 'cascade_mask_rcnn':
        raise ValueError(f'cascade_* kwargs are only for cascade_mask_rcnn, got {sorted(cascade_kwargs)}')

    if detector == 'retinanet':
        anchors = _rcnn_anchors(n_maps, base=32, scales_per_octave=3)
        return RetinaNet(fpn, num_classes + 1, anchor_generator=anchors, **transform, **kwargs)
    if detector == 'fcos':
        anchors = AnchorGenerator(tuple((8 * 2 ** i,) for i in range(n_maps)), ((1.0,),) * n_maps)
        return FCOS(fpn, num_classes + 1, anchor_generator=anchors, **transform, **kwargs)

    box_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    common = dict(rpn_anchor_generator=_rcnn_anchors(n_maps), box_roi_pool=box_pool, **transform)
    if box_head is not None and detector != 'cascade_mask_rcnn':
        head, rep = _box_head(box_head, fpn_channels, norm=box_head_norm)
        common.update(box_head=head, box_predictor=FastRCNNPredictor(rep, num_classes + 1))
    if detector == 'faster_rcnn':
        return FasterRCNN(fpn, num_classes + 1, **common, **kwargs)
    mask_pool = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
    model = MaskRCNN(fpn, num_classes + 1, mask_roi_pool=mask_pool, **common, **kwargs)
    if detector == 'mask_rcnn':
        return model
    # cascade: replace the single box stage by three (mask head / pooler of the Mask R-CNN kept)
    heads, preds = [], []
    for _ in range(len(cascade_kwargs.get('iou_thresholds', (0.5, 0.6, 0.7)))):
        head, rep = _box_head(box_head or '4conv1fc', fpn_channels, norm=box_head_norm)
        heads.append(head)
        preds.append(FastRCNNPredictor(rep, num_classes + 1))
    old = model.roi_heads
    model.roi_heads = CascadeRoIHeads(
        box_pool, heads, preds, batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
        positive_fraction=old.fg_bg_sampler.positive_fraction, score_thresh=old.score_thresh,
        nms_thresh=old.nms_thresh, detections_per_img=old.detections_per_img, mask_roi_pool=old.mask_roi_pool,
        mask_head=old.mask_head, mask_predictor=old.mask_predictor, **cascade_kwargs)
    return model


@MODELS.register_module()
class TorchvisionDetector(BaseModel):
    """A torchvision detector (:func:`build_detector`) as an mmengine model.

    ``forward(inputs, data_samples, mode)``: ``inputs`` is a list of ``[3, H, W]`` float images in 0-1 (any sizes),
    ``data_samples`` a list of target dicts (``boxes`` xyxy in input pixels, ``labels`` 1..num_classes,
    ``masks`` ``[N, H, W]`` uint8, ``image_id``). ``'loss'`` returns the detector's losses (keys prefixed
    ``loss_`` where torchvision's lack it, so mmengine sums them all); ``'predict'`` one dict per image
    (``boxes``, ``scores``, ``labels``, ``masks`` as ``[N, H, W]`` bool, ``image_id``); ``'tensor'`` the FPN maps.
    """

    def __init__(self, detector: str = 'mask_rcnn', backbone: Optional[dict] = None, num_classes: int = 80,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None, **detector_kwargs):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if backbone is None:
            raise ValueError("backbone is required, e.g. dict(model_name='dinat_tiny', dense_preset='coco')")
        self.detector = detector
        self.num_classes = num_classes
        self.model = build_detector(detector, backbone, num_classes, **detector_kwargs)

    def init_weights(self):
        # torchvision / timm initialise in their constructors; only the backbone's init_cfg (checkpoint) remains
        self.model.backbone.body.init_weights()

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs)
        if mode == 'loss':
            targets = [{k: v for k, v in t.items() if k in ('boxes', 'labels', 'masks')} for t in data_samples]
            losses = self.model(inputs, targets)
            return {(k if 'loss' in k else f'loss_{k}'): v for k, v in losses.items()}
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            batch, _ = self.model.transform(inputs)
            return self.model.backbone(batch.tensors)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    @torch.no_grad()
    def predict(self, inputs, data_samples=None) -> List[dict]:
        outputs = self.model(inputs)
        results = []
        for i, out in enumerate(outputs):
            item = {k: v.detach().cpu() for k, v in out.items()}
            if 'masks' in item:
                item['masks'] = item['masks'][:, 0] > 0.5
            if data_samples is not None:
                item['image_id'] = int(data_samples[i]['image_id'])
            results.append(item)
        return results


det_collate = FUNCTIONS.register_module(name='det_collate', module=list_collate)  # torchvision: a target per image


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------
@DATASETS.register_module()
class CocoDetDataset(torch.utils.data.Dataset):
    """A COCO-format detection / instance segmentation set.

    Args:
        data_root: folder; ``ann_file`` and ``img_prefix`` are relative to it (or absolute).
        ann_file: COCO json (``instances_*.json``).
        img_prefix: image folder (``file_name`` of each image is relative to it).
        with_mask: also return ``masks`` (polygons / RLE decoded by pycocotools).
        flip_prob: horizontal flip probability (training).
        filter_empty_gt: drop images without (non-crowd) annotations (training).
        prepare: ``'tiny_shapes'`` or ``dict(type='tiny_shapes', ...)``: write
            :func:`~attnzoo.tasks.demo_data.write_tiny_coco` into
            ``data_root`` first if ``ann_file`` is missing.

    Items: ``dict(inputs=[3, H, W] float 0-1, data_samples=dict(boxes [N, 4] xyxy, labels [N] 1..K, masks
    [N, H, W] uint8, image_id))``; crowd annotations are left out of the targets (COCOeval handles them).
    Labels are the rank of the category id (``metainfo['cat_ids'][label - 1]`` maps back).
    """

    def __init__(self, data_root: str = '', ann_file: str = 'annotations/instances_train2017.json',
                 img_prefix: str = 'train2017', with_mask: bool = True, flip_prob: float = 0.0,
                 filter_empty_gt: bool = False, prepare: Union[None, str, dict] = None):
        from pycocotools.coco import COCO

        self.ann_file = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
        self.img_prefix = img_prefix if osp.isabs(img_prefix) else osp.join(data_root, img_prefix)
        if prepare and not osp.isfile(self.ann_file):
            prepare_dataset('detection', data_root, prepare)
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'ann_file={self.ann_file!r} does not exist (COCO json expected)')
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f'flip_prob must be in [0, 1], got {flip_prob}')
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(self.ann_file)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        if filter_empty_gt:
            ids = [i for i in ids if any(not a.get('iscrowd', 0) for a in self.coco.imgToAnns.get(i, []))]
        self.ids = ids
        self.with_mask, self.flip_prob = with_mask, float(flip_prob)
        classes = tuple(self.coco.cats[c]['name'] for c in self.cat_ids)
        self.metainfo = dict(classes=classes, cat_ids=tuple(self.cat_ids), ann_file=osp.abspath(self.ann_file))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        with Image.open(osp.join(self.img_prefix, info['file_name'])) as im:
            img = torch.from_numpy(np.asarray(im.convert('RGB'), dtype=np.uint8).copy())
        img = img.permute(2, 0, 1).float().div_(255.0)
        H, W = img.shape[-2:]
        boxes, labels, masks = [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get('iscrowd', 0) or ann['category_id'] not in self.cat_to_label:
                continue
            x, y, w, h = ann['bbox']
            x1, y1, x2, y2 = max(x, 0.), max(y, 0.), min(x + w, W), min(y + h, H)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(self.cat_to_label[ann['category_id']])
            if self.with_mask:
                masks.append(self.coco.annToMask(ann))
        target = dict(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.tensor(labels, dtype=torch.int64), image_id=image_id)
        if self.with_mask:
            target['masks'] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros((0, H, W), dtype=torch.uint8))
        if self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            img = img.flip(-1)
            b = target['boxes']
            target['boxes'] = torch.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], dim=1)
            if self.with_mask:
                target['masks'] = target['masks'].flip(-1)
        return dict(inputs=img, data_samples=target)


# --------------------------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------------------------
_STAT_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO AP from pycocotools' ``COCOeval`` (``coco/bbox_mAP``, ``coco/bbox_mAP_50``, ..., ``coco/segm_mAP``...).

    Args:
        ann_file: GT json; default the dataset's (``dataset_meta['ann_file']``, set by :class:`CocoDetDataset`).
        metric: ``'bbox'`` and / or ``'segm'``.
        mask_score_thresh: masks are binarised at 0.5 by the model; this only drops predictions scored below it.

    Predictions are mapped back to COCO category ids with ``dataset_meta['cat_ids']`` and evaluated on the image
    ids that were predicted (so a subset evaluates against its own GT only).
    """
    default_prefix = 'coco'

    def __init__(self, ann_file: Optional[str] = None, metric: Union[str, Sequence[str]] = ('bbox', 'segm'),
                 mask_score_thresh: float = 0.0, collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        metrics = (metric,) if isinstance(metric, str) else tuple(metric)
        bad = [m for m in metrics if m not in ('bbox', 'segm')]
        if bad or not metrics:
            raise ValueError(f"metric must be 'bbox' and/or 'segm', got {metric!r}")
        self.metrics, self.ann_file, self.mask_score_thresh = metrics, ann_file, float(mask_score_thresh)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        from pycocotools import mask as mask_utils

        cat_ids = (self.dataset_meta or {}).get('cat_ids')
        for pred in data_samples:
            image_id = int(pred['image_id'])
            boxes = pred['boxes'].float().numpy()
            scores, labels = pred['scores'].float().numpy(), pred['labels'].numpy()
            dets, segs = [], []
            for j in range(len(boxes)):
                x1, y1, x2, y2 = (float(v) for v in boxes[j])
                cat = int(cat_ids[labels[j] - 1]) if cat_ids else int(labels[j])
                dets.append(dict(image_id=image_id, category_id=cat, bbox=[x1, y1, x2 - x1, y2 - y1],
                                 score=float(scores[j])))
                if 'segm' in self.metrics and 'masks' in pred and scores[j] >= self.mask_score_thresh:
                    rle = mask_utils.encode(np.asfortranarray(pred['masks'][j].numpy().astype(np.uint8)))
                    rle['counts'] = rle['counts'].decode('ascii')
                    segs.append(dict(image_id=image_id, category_id=cat, segmentation=rle, score=float(scores[j])))
            self.results.append(dict(image_id=image_id, bbox=dets, segm=segs))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        from mmengine.logging import MMLogger
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        ann_file = self.ann_file or (self.dataset_meta or {}).get('ann_file')
        if not ann_file:
            raise ValueError('CocoMetric: no ann_file (pass ann_file= or use CocoDetDataset, which provides it)')
        logger = MMLogger.get_current_instance()
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(ann_file)
        img_ids = sorted({r['image_id'] for r in results})
        out = {}
        for iou_type in self.metrics:
            dets = [d for r in results for d in r[iou_type]]
            if not dets:
                logger.warning(f'CocoMetric: no {iou_type} predictions; {iou_type} AP is 0')
                out.update({f'{iou_type}_{n}': 0.0 for n in _STAT_NAMES})
                continue
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                dt = gt.loadRes(dets)
                ev = COCOeval(gt, dt, iou_type)
                ev.params.imgIds = img_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            table = '\n'.join(line for line in buf.getvalue().splitlines() if line.lstrip().startswith('Average'))
            logger.info(f'COCO {iou_type} ({len(img_ids)} images):\n{table}')
            out.update({f'{iou_type}_{n}': float(max(ev.stats[i], 0.0)) for i, n in enumerate(_STAT_NAMES)})
        return out


# --------------------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------------------
@HOOKS.register_module()
class DenseSummaryHook(SummaryHook):
    """One ``Final: <key>=.. ... time=..s`` line at the end of training (last val metrics, best of the first
    key) and of testing; ``keys`` are metric names or their suffixes (``'bbox_mAP'``, ``'mIoU'``)."""

    def __init__(self, keys: Sequence[str] = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP')):
        super().__init__()
        self.keys = tuple(keys)
        self.best_name = f'best_{self.keys[0]}'

    def format(self, metrics: Optional[dict], seconds: float, **extra) -> str:
        metrics = metrics or {}
        parts = []
        for key in self.keys:
            value = find_metric(metrics, key)
            parts.append(f'{key}={float(value):.4f}' if value is not None else f'{key}=n/a')
        return final_line(parts, seconds, **extra)

    def best_candidate(self, metrics: dict) -> Optional[float]:
        return find_metric(metrics, self.keys[0])
