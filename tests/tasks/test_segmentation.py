"""attnzoo.tasks.segmentation: UPerNet / semantic FPN heads, whole and sliding inference, the ADE20K-layout
reader, mIoU as mmseg computes it, the configs and the Runner path on a synthetic set."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel

import attnzoo  # noqa: F401
import attnzoo.tasks  # noqa: F401
from attnzoo.models.dense import dense_model_kwargs
from attnzoo.tasks.segmentation import (EncoderDecoderSegmentor, FCNHead, IoUMetric, SegFolderDataset,
                                        SemanticFPNHead, UPerHead, reduce_zero_label, seg_collate)
from attnzoo.tasks.demo_data import write_tiny_seg

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'segmentation'
TINY_BACKBONE = dict(model_name='dinat_mini', model_kwargs=dict(
    embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3, dilations=((2,), (1,), (1,), (1,)),
    mlp_ratio=1.0))


@pytest.fixture(scope='module')
def tiny_seg(tmp_path_factory):
    return write_tiny_seg(str(tmp_path_factory.mktemp('seg') / 'tiny'), num_train=4, num_val=2, size=(72, 56))


# ------------------------------------------------------------------------------------ heads
def test_heads_shapes():
    feats = [torch.randn(2, c, 32 // s, 40 // s) for c, s in ((8, 1), (16, 2), (32, 4), (64, 8))]
    uper = UPerHead([8, 16, 32, 64], num_classes=5, channels=24)
    assert uper(feats).shape == (2, 5, 32, 40)
    assert len(uper.ppm) == 4 and uper.fpn_bottleneck[0].in_channels == 4 * 24
    assert FCNHead(32, 5, channels=12)(feats[2]).shape == (2, 5, 8, 10)
    fpn = SemanticFPNHead([8, 16, 32, 64], [4, 8, 16, 32], num_classes=5, fpn_channels=16, channels=12)
    assert fpn(feats).shape == (2, 5, 32, 40)
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in h.modules()) for h in fpn.scale_heads] == [1, 1, 2, 3]


def test_segmentor_loss_ignores_255_and_reaches_the_backbone():
    torch.manual_seed(0)
    model = EncoderDecoderSegmentor(TINY_BACKBONE, num_classes=4, head_channels=16, aux_channels=8)
    model.init_weights()
    x = [torch.rand(3, 64, 64), torch.rand(3, 50, 60)]  # different sizes: padded in the batch
    labels = [torch.randint(0, 4, (64, 64)), torch.full((50, 60), 255)]
    losses = model(x, [dict(gt_seg=y) for y in labels], mode='loss')
    assert set(losses) == {'loss_ce', 'loss_aux'}
    total, _ = BaseModel.parse_losses(model, losses)
    total.backward()
    assert next(model.backbone.network.stem.parameters()).grad.abs().sum() > 0
    # a fully ignored image changes nothing
    model.zero_grad()
    torch.manual_seed(0)
    model.eval()  # no dropout
    only = model([x[0]], [dict(gt_seg=labels[0])], mode='loss')['loss_ce']
    both = model(x, [dict(gt_seg=y) for y in labels], mode='loss')['loss_ce']
    assert both.item() == pytest.approx(only.item(), rel=1e-4)
    fpn = EncoderDecoderSegmentor(TINY_BACKBONE, num_classes=4, decode_head='fpn', head_channels=8)
    assert fpn.aux_head is None and set(fpn(x, [dict(gt_seg=y) for y in labels], mode='loss')) == {'loss_ce'}
    with pytest.raises(ValueError, match='decode_head'):
        EncoderDecoderSegmentor(TINY_BACKBONE, decode_head='psp')


def test_whole_and_slide_inference():
    torch.manual_seed(0)
    model = EncoderDecoderSegmentor(TINY_BACKBONE, num_classes=3, head_channels=16, aux_channels=8,
                                    crop_size=(64, 64), stride=(40, 40)).eval()
    img = torch.rand(3, 64, 64)
    whole = model([img], [dict(gt_seg=torch.zeros(32, 32, dtype=torch.long))], mode='predict')[0]
    assert whole['pred'].shape == (32, 32) and whole['gt'].shape == (32, 32)  # resized to the label
    model.test_mode = 'slide'  # one window covering the image == whole-image inference
    norm = ((img - model.image_mean) / model.image_std)[None]
    assert torch.allclose(model.slide_logits(norm), model.encode_decode(norm), atol=1e-5)
    big = torch.rand(3, 90, 130)  # 2 x 3 overlapping windows, borders aligned
    pred = model([big], None, mode='predict')[0]['pred']
    assert pred.shape == (90, 130) and int(pred.max()) < 3


# ------------------------------------------------------------------------------------ data and metric
def test_reduce_zero_label():
    out = reduce_zero_label(np.array([[0, 1, 2], [150, 255, 0]], dtype=np.uint8))
    assert out.tolist() == [[255, 0, 1], [149, 255, 255]]  # 0 and 255 ignored, the rest shifted down


def test_folder_dataset(tiny_seg):
    train = SegFolderDataset(tiny_seg, 'training', scale=(72, 56), ratio_range=(0.5, 0.5), crop_size=(40, 48))
    assert len(train) == 4 and train.training
    item = train[0]
    assert item['inputs'].shape == (3, 40, 48) and item['data_samples']['gt_seg'].shape == (40, 48)
    seg = item['data_samples']['gt_seg']
    assert set(seg.unique().tolist()) <= {0, 1, 2, 255}
    assert (seg[28:] == 255).all()  # rescaled to 28 x 36 (ratio 0.5), padded with 255 to the crop
    val = SegFolderDataset(tiny_seg, 'validation', scale=(144, 112))
    item = val[0]
    assert item['inputs'].shape == (3, 112, 144) and item['data_samples']['gt_seg'].shape == (56, 72)
    batch = seg_collate([val[0], val[1]])
    assert len(batch['inputs']) == 2
    with pytest.raises(FileNotFoundError, match='ADE20K layout'):
        SegFolderDataset(tiny_seg, 'testing')


def test_iou_metric_against_hand_computed_areas():
    metric = IoUMetric(num_classes=3)
    pred1, gt1 = torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 1, 1, 255]])
    pred2, gt2 = torch.tensor([[2, 2]]), torch.tensor([[2, 0]])
    metric.process(None, [dict(pred=pred1, gt=gt1), dict(pred=pred2, gt=gt2)])
    res = metric.evaluate(2)
    # dataset sums: class 0: I=1, U=3 (pred 2 + gt 2 - 1); class 1: I=1, U=2; class 2: I=1, U=2
    assert res['mIoU'] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert res['aAcc'] == pytest.approx(100 * 3 / 5)
    assert res['mAcc'] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1) / 3)
    metric = IoUMetric(num_classes=4)  # classes 2 (only predicted where ignored) and 3: absent, skipped
    metric.process(None, [dict(pred=pred1, gt=gt1)])
    assert metric.evaluate(1)['mIoU'] == pytest.approx(100 * (1 / 2 + 1 / 2) / 2)


# ------------------------------------------------------------------------------------ configs and tools
@pytest.mark.parametrize('path', sorted(p.name for p in CONFIGS.glob('*.py')))
def test_configs_resolve(path):
    cfg = Config.fromfile(str(CONFIGS / path))
    assert cfg.model.type == 'EncoderDecoderSegmentor' and cfg.val_evaluator.type == 'IoUMetric'
    bb = cfg.model.backbone
    dense_model_kwargs(bb.model_name, bb.get('dense_preset'), bb.get('model_kwargs'))
    assert cfg.param_scheduler[0].type == 'LinearLR'


def test_dinat_tiny_config_matches_the_official_recipe():
    cfg = Config.fromfile(str(CONFIGS / 'upernet_dinat_tiny_512x512_160k_ade20k.py'))
    kwargs = dense_model_kwargs(cfg.model.backbone.model_name, 'ade20k', cfg.model.backbone.model_kwargs)
    assert kwargs['dilations'] == ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4) * 3, (1, 2, 1, 2, 1))
    assert kwargs['drop_path_rate'] == 0.3 and cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01 and cfg.param_scheduler[1].type == 'PolyLR'
    assert cfg.train_cfg.max_iters == 160000 and cfg.model.head_channels == 512 and cfg.model.aux_weight == 0.4
    assert cfg.train_dataloader.dataset.crop_size == (512, 512) and cfg.val_evaluator.ignore_index == 255


def demo_options(work_dir, data_root, iters=4, val_interval=4, **more):
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val_interval}',
            f'default_hooks.checkpoint.interval={val_interval}', f'param_scheduler.1.end={iters}',
            'param_scheduler.0.end=2', 'param_scheduler.1.begin=2']
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.append(f'{key}.dataset.data_root={data_root}')
    opts += [f'{k}={v}' for k, v in more.items()]
    return ['--work-dir', str(work_dir), '--cfg-options'] + opts


def test_train_and_test_tools_run_the_demo_config(tmp_path):
    from attnzoo.cli import test as test_tool
    from attnzoo.cli import train as train_tool

    cfg = str(CONFIGS / 'demo_tiny_shapes_upernet.py')
    train_tool.main([cfg] + demo_options(tmp_path / 'wd', tmp_path / 'data'))
    ckpt = tmp_path / 'wd' / 'iter_4.pth'
    assert ckpt.is_file()
    metrics = test_tool.main([cfg, str(ckpt)] + demo_options(tmp_path / 'wd_test', tmp_path / 'data',
                                                             **{'model.test_mode': 'slide'}))
    assert {'mIoU', 'mAcc', 'aAcc'} <= set(metrics)


@pytest.mark.slow
def test_upernet_miou_rises_on_tiny_shapes(tmp_path):
    """UPerNet on a tiny DiNAT: mIoU (IoUMetric) of the untrained model vs after 200 iterations."""
    from attnzoo.cli import test as test_tool
    from attnzoo.cli import train as train_tool

    cfg = str(CONFIGS / 'demo_tiny_shapes_upernet.py')
    data = tmp_path / 'data'
    train_tool.main([cfg] + demo_options(tmp_path / 'wd', data, iters=200, val_interval=200))
    init = tmp_path / 'init.pth'  # the untrained network, as a bare state dict, through the same evaluator
    torch.manual_seed(0)
    built = Config.fromfile(cfg)
    from mmengine.registry import MODELS
    model = MODELS.build(built.model)
    model.init_weights()
    torch.save(model.state_dict(), init)
    before = test_tool.main([cfg, str(init)] + demo_options(tmp_path / 'wd_before', data))
    after = test_tool.main([cfg, str(tmp_path / 'wd' / 'iter_200.pth')] + demo_options(tmp_path / 'wd_after', data))
    print(f"tiny seg mIoU: untrained {before['mIoU']:.2f} -> 200 iters {after['mIoU']:.2f}")
    assert after['mIoU'] > before['mIoU'] + 15
