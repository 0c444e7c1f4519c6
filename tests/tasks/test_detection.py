"""attnzoo.tasks.detection: torchvision detectors on attnzoo backbones, the COCO reader, the COCO metric
(pycocotools), the configs and the Runner path (attnzoo.cli.train / .test, behind tools/train.py, tools/test.py) on a synthetic COCO set."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel

import attnzoo  # noqa: F401
import attnzoo.tasks  # noqa: F401  (registers the components)
from attnzoo.models.dense import dense_model_kwargs

pytest.importorskip('pycocotools')
from attnzoo.tasks.detection import (DETECTORS, CocoDetDataset, CocoMetric, TorchvisionDetector,  # noqa: E402
                                     det_collate)
from attnzoo.tasks.demo_data import write_tiny_coco  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'detection'
TINY_BACKBONE = dict(model_name='dinat_mini', model_kwargs=dict(
    embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3, dilations=((2,), (1,), (1,), (1,)),
    mlp_ratio=1.0))
SMALL = dict(fpn_channels=32, min_size=96, max_size=128, image_mean=(0.5,) * 3, image_std=(0.25,) * 3)
RCNN_SMALL = dict(rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32, rpn_pre_nms_top_n_test=64,
                  rpn_post_nms_top_n_test=32, box_batch_size_per_image=32, box_detections_per_img=5)


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    return write_tiny_coco(str(tmp_path_factory.mktemp('coco') / 'tiny'), num_train=6, num_val=4, size=(96, 80))


def batch(root, split='train', n=2, **kwargs):
    ds = CocoDetDataset(root, f'annotations/instances_{split}.json', split, **kwargs)
    return ds, det_collate([ds[i] for i in range(n)])


# ------------------------------------------------------------------------------------ data
def test_tiny_coco_and_reader(tiny_coco):
    ann = json.loads((Path(tiny_coco) / 'annotations' / 'instances_train.json').read_text())
    assert len(ann['images']) == 6 and [c['name'] for c in ann['categories']] == ['square', 'circle', 'triangle']
    ds, data = batch(tiny_coco)
    assert ds.metainfo['cat_ids'] == (1, 2, 3) and ds.metainfo['ann_file'].endswith('instances_train.json')
    img, t = data['inputs'][0], data['data_samples'][0]
    assert img.shape == (3, 80, 96) and 0 <= img.min() and img.max() <= 1
    assert t['masks'].shape == (len(t['boxes']), 80, 96) and t['labels'].min() >= 1
    for box, mask in zip(t['boxes'], t['masks']):  # the box encloses its polygon mask
        ys, xs = np.nonzero(mask.numpy())
        assert box[0] - 1 <= xs.min() and xs.max() <= box[2] + 1 and box[1] - 1 <= ys.min() and ys.max() <= box[3] + 1
    flipped = CocoDetDataset(tiny_coco, 'annotations/instances_train.json', 'train', flip_prob=1.0)[0]
    assert torch.equal(flipped['inputs'], img.flip(-1))
    assert torch.allclose(flipped['data_samples']['boxes'][:, [2, 0]], 96 - t['boxes'][:, [0, 2]])
    assert torch.equal(flipped['data_samples']['masks'], t['masks'].flip(-1))
    with pytest.raises(FileNotFoundError, match='ann_file'):
        CocoDetDataset(tiny_coco, 'annotations/missing.json', 'train')


# ------------------------------------------------------------------------------------ metric
def gt_as_predictions(ds):
    preds = []
    for i in range(len(ds)):
        t = ds[i]['data_samples']
        preds.append(dict(image_id=t['image_id'], boxes=t['boxes'], labels=t['labels'],
                          scores=torch.ones(len(t['boxes'])), masks=t['masks'].bool()))
    return preds


def test_coco_metric_perfect_empty_and_category_mapping(tiny_coco):
    ds = CocoDetDataset(tiny_coco, 'annotations/instances_val.json', 'val')
    metric = CocoMetric()
    metric.dataset_meta = ds.metainfo
    metric.process(None, gt_as_predictions(ds))
    res = metric.evaluate(len(ds))
    assert res['coco/bbox_mAP'] == pytest.approx(1.0) and res['coco/segm_mAP'] == pytest.approx(1.0)
    # the labels are ranks of the category ids: shifting them must break the match
    metric = CocoMetric(metric='bbox')
    metric.dataset_meta = ds.metainfo
    wrong = gt_as_predictions(ds)
    for p in wrong:
        p['labels'] = p['labels'] % 3 + 1
    metric.process(None, wrong)
    assert metric.evaluate(len(ds))['coco/bbox_mAP'] < 0.5
    metric = CocoMetric()
    metric.dataset_meta = ds.metainfo
    empty = [dict(image_id=p['image_id'], boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                  scores=torch.zeros(0), masks=torch.zeros(0, 80, 96, dtype=torch.bool)) for p in wrong]
    metric.process(None, empty)
    res = metric.evaluate(len(ds))
    assert res['coco/bbox_mAP'] == 0.0 and res['coco/segm_mAP_50'] == 0.0
    with pytest.raises(ValueError, match='metric'):
        CocoMetric(metric='keypoints')


# ------------------------------------------------------------------------------------ model
@pytest.mark.parametrize('detector', DETECTORS)
def test_detectors_train_step_and_predict(tiny_coco, detector):
    torch.manual_seed(0)
    extra = RCNN_SMALL if 'rcnn' in detector else dict(detections_per_img=5)
    model = TorchvisionDetector(detector, TINY_BACKBONE, num_classes=3, **SMALL, **extra)
    _, data = batch(tiny_coco)
    losses = model(**data, mode='loss')
    assert all('loss' in k for k in losses), losses.keys()  # RetinaNet / FCOS keys are prefixed
    total, log_vars = BaseModel.parse_losses(model, losses)
    assert torch.isfinite(total) and total > 0
    total.backward()
    stem_grad = next(model.model.backbone.body.network.stem.parameters()).grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    model.eval()
    preds = model(**data, mode='predict')
    assert len(preds) == 2 and preds[0]['image_id'] == data['data_samples'][0]['image_id']
    assert preds[0]['boxes'].shape[1] == 4 and len(preds[0]['boxes']) <= 5
    if 'mask' in detector:
        assert preds[0]['masks'].dtype == torch.bool and preds[0]['masks'].shape[1:] == (80, 96)
    feats = model(**data, mode='tensor')
    assert all(f.shape[1] == 32 for f in feats.values())


def test_cascade_stage_losses_and_arguments():
    torch.manual_seed(0)
    model = TorchvisionDetector('cascade_mask_rcnn', TINY_BACKBONE, num_classes=3, **SMALL, **RCNN_SMALL,
                                cascade_iou_thresholds=(0.5, 0.7), cascade_bbox_reg_weights=((10, 10, 5, 5),) * 2,
                                cascade_stage_loss_weights=(1.0, 0.5), cascade_box_loss='smooth_l1')
    assert len(model.model.roi_heads.stages) == 2
    img = torch.rand(3, 90, 110)
    target = dict(boxes=torch.tensor([[10., 10., 60., 70.]]), labels=torch.tensor([2]),
                  masks=torch.zeros(1, 90, 110, dtype=torch.uint8))
    target['masks'][0, 10:70, 10:60] = 1
    losses = model([img], [target], mode='loss')
    assert {'loss_classifier_s0', 'loss_box_reg_s1', 'loss_mask', 'loss_objectness'} <= set(losses)
    with pytest.raises(ValueError, match='cascade_'):
        TorchvisionDetector('mask_rcnn', TINY_BACKBONE, num_classes=3, cascade_box_loss='giou')
    with pytest.raises(ValueError, match='detector'):
        TorchvisionDetector('yolo', TINY_BACKBONE, num_classes=3)
    with pytest.raises(ValueError, match='model_name'):
        TorchvisionDetector('mask_rcnn', dict(model_name='dinat_tinyy'), num_classes=3)


def test_any_input_size_with_detection_dilations():
    """DiNAT's COCO dilations (28 at stride 4) on a 100 x 70 image: the attention layers pad, the transform pads
    the batch to a multiple of 32."""
    bb = dict(model_name='dinat_mini', dense_preset='coco', model_kwargs=dict(
        embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3))
    model = TorchvisionDetector('faster_rcnn', bb, num_classes=2, **SMALL, **RCNN_SMALL).eval()
    assert model.model.backbone.body.network.stages[0].blocks[0].attn.dilation[0] == 1
    assert model.model.backbone.body.network.stages[1].blocks[1].attn.dilation[0] == 7
    out = model([torch.rand(3, 70, 100)], [dict(image_id=1)], mode='predict')
    assert out[0]['boxes'].shape[1] == 4


# ------------------------------------------------------------------------------------ configs and tools
@pytest.mark.parametrize('path', sorted(p.name for p in CONFIGS.glob('*.py')))
def test_configs_resolve(path):
    cfg = Config.fromfile(str(CONFIGS / path))
    assert cfg.model.type == 'TorchvisionDetector' and cfg.model.detector in DETECTORS
    bb = cfg.model.backbone
    kwargs = dense_model_kwargs(bb.model_name, bb.get('dense_preset'), bb.get('model_kwargs'))
    if bb.get('dense_preset') == 'coco' and bb.model_name.startswith('dinat'):
        assert kwargs['dilations'][0][:2] == (1, 28)
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.train_dataloader.collate_fn.type == 'det_collate'


def test_dinat_tiny_config_matches_the_official_recipe():
    cfg = Config.fromfile(str(CONFIGS / 'mask_rcnn_dinat_tiny_fpn_3x_coco.py'))
    kwargs = dense_model_kwargs(cfg.model.backbone.model_name, 'coco', cfg.model.backbone.model_kwargs)
    assert kwargs['dilations'] == ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7) * 3, (1, 3, 1, 3, 1))
    assert kwargs['drop_path_rate'] == 0.2 and cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.param_scheduler[1].milestones == [27, 33] and cfg.train_cfg.max_epochs == 36


def demo_options(work_dir, epochs=1, n_train=4, n_val=4, val_interval=1, data_root=None):
    tiny = dict(type='tiny_shapes', num_train=n_train, num_val=n_val, size=(128, 96), seed=0, val_equals_train=True)
    return ['--work-dir', str(work_dir), '--cfg-options', f'train_cfg.max_epochs={epochs}',
            f'train_cfg.val_interval={val_interval}', f'data_root={data_root}',
            f'train_dataloader.dataset.data_root={data_root}', f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}',
            f'train_dataloader.dataset.prepare.num_train={tiny["num_train"]}',
            f'val_dataloader.dataset.prepare.num_train={tiny["num_train"]}',
            f'test_dataloader.dataset.prepare.num_train={tiny["num_train"]}',
            f'default_hooks.checkpoint.interval={val_interval}']


def test_train_and_test_tools_run_the_demo_config(tmp_path):
    from attnzoo.cli import test as test_tool
    from attnzoo.cli import train as train_tool

    data_root = tmp_path / 'data'
    cfg = str(CONFIGS / 'demo_tiny_shapes_mask_rcnn.py')
    train_tool.main([cfg] + demo_options(tmp_path / 'wd', data_root=data_root))
    ckpt = tmp_path / 'wd' / 'epoch_1.pth'
    assert ckpt.is_file()
    metrics = test_tool.main([cfg, str(ckpt)] + demo_options(tmp_path / 'wd_test', data_root=data_root))
    assert 'coco/bbox_mAP_50' in metrics and 'coco/segm_mAP' in metrics


@pytest.mark.slow
def test_mask_rcnn_overfits_tiny_coco(tmp_path):
    """Mask R-CNN on a tiny DiNAT learns the synthetic shapes: bbox AP50 (pycocotools) on the training images.
    Recorded (2 shared CPU cores): see the closing note of issue 7."""
    from attnzoo.cli import test as test_tool
    from attnzoo.cli import train as train_tool

    data_root = tmp_path / 'data'
    cfg = str(CONFIGS / 'demo_tiny_shapes_mask_rcnn.py')
    opts = demo_options(tmp_path / 'wd', epochs=20, n_train=16, val_interval=20, data_root=data_root)
    train_tool.main([cfg] + opts + ['param_scheduler.1.milestones=[16]'])
    metrics = test_tool.main([cfg, str(tmp_path / 'wd' / 'epoch_20.pth')] + demo_options(
        tmp_path / 'wd_test', n_train=16, data_root=data_root))
    print('tiny COCO after 20 epochs:', {k: round(v, 4) for k, v in metrics.items()})
    assert metrics['coco/bbox_mAP_50'] > 0.5
    assert metrics['coco/segm_mAP_50'] > 0.3
