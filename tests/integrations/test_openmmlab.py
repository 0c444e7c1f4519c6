"""attnzoo.integrations: the backbones in mmengine's registries (as mmdet / mmseg find them), the mmdet-style
arguments (out_indices, frozen_stages, norm_eval, init_cfg), official detection / segmentation checkpoints
(``backbone.`` prefix, per-output norms) through the families' converters, and the dense presets. A real mmdet /
mmseg model is built only where those import (they need a compiled mmcv)."""
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import Registry

import attnzoo.integrations as integ
from attnzoo.integrations import AttnZooBackbone, FAMILY_BACKBONES
from attnzoo.models.dense import DenseBackbone, dense_model_kwargs, load_dense_checkpoint
from attnzoo.models.nat import dinat_dense_dilations

TINY = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3,
            dilations=((2,), (1,), (1,), (1,)), mlp_ratio=1.0)
CHILD = Registry('model', parent=ROOT_MODELS, scope='attnzoo_test_child')  # stands in for mmdet's / mmseg's


def test_registered_families_are_found_from_a_child_registry():
    assert {'NAT', 'DiNAT', 'DiNAT_s', 'BiFormer', 'FaViT', 'L2ViT', 'Sparsifiner'} <= set(FAMILY_BACKBONES)
    for key in ('attnzoo.DiNAT', 'DiNAT', 'mmengine.DiNAT'):
        assert CHILD.get(key) is FAMILY_BACKBONES['DiNAT']
    b = CHILD.build(dict(type='attnzoo.DiNAT', arch='mini', out_indices=(1, 2, 3), **TINY))
    assert b.model_name == 'dinat_mini' and b.channels == [32, 64, 128] and b.strides == [8, 16, 32]
    out = b(torch.rand(1, 3, 70, 90))
    assert isinstance(out, tuple) and [o.shape[1] for o in out] == [32, 64, 128]
    assert out[0].shape[2:] == (9, 12)  # any size: ceil-rounded strides
    generic = CHILD.build(dict(type='attnzoo.AttnZooBackbone', model_name='resnet18', out_indices=(1, 2, 3, 4)))
    assert generic.channels == [64, 128, 256, 512] and generic.out_norms is None
    with pytest.raises(ValueError, match='arch'):
        CHILD.build(dict(type='attnzoo.DiNAT'))
    with pytest.raises(ValueError, match='close matches'):
        CHILD.build(dict(type='attnzoo.DiNAT', arch='tinny'))


def test_frozen_stages_and_norm_eval():
    b = FAMILY_BACKBONES['NAT'](arch='mini', frozen_stages=2, **TINY)
    net = b.network
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.stages[1].parameters())
    assert all(p.requires_grad for p in net.stages[2].parameters())
    assert not any(p.requires_grad for p in b.out_norms[0].parameters())
    b.train()
    assert not net.stages[0].training and net.stages[2].training
    r = AttnZooBackbone(model_name='resnet18', out_indices=(1, 2, 3, 4), norm_eval=True).train()
    bns = [m for m in r.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and r.training
    with pytest.raises(ValueError, match='frozen_stages'):
        FAMILY_BACKBONES['NAT'](arch='mini', frozen_stages=6, **TINY)


def test_dense_presets():
    assert dinat_dense_dilations((3, 4, 18, 5), 'coco') == (
        (1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7) * 3, (1, 3, 1, 3, 1))
    assert dinat_dense_dilations((2, 2, 6, 2), 'coco', 'dinat_s') == ((1, 28), (1, 14), (1, 3, 1, 5, 1, 7), (1, 3))
    assert dinat_dense_dilations((2, 2, 18, 2), 'ade20k', 'dinat_s')[1] == (1, 8)
    assert dense_model_kwargs('dinat_mini', 'ade20k')['dilations'][2] == (1, 2, 1, 3, 1, 4)
    assert dense_model_kwargs('dinat_large.in22k', 'coco', dict(drop_path_rate=0.6))['drop_path_rate'] == 0.6
    assert dense_model_kwargs('dinat_tiny', 'coco', dict(dilations='mine'))['dilations'] == 'mine'
    assert dense_model_kwargs('biformer_small', 'coco') == dict(num_regions=16, auto_pad=True)
    assert dense_model_kwargs('biformer_small', 'ade20k')['num_regions'] == 8
    assert dense_model_kwargs('nat_tiny', 'coco') == {}
    with pytest.raises(ValueError, match='dense_preset'):
        dense_model_kwargs('dinat_tiny', 'cityscapes')


def test_biformer_preset_reaches_the_model():
    b = DenseBackbone('biformer_small', dense_preset='coco',
                      model_kwargs=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), head_dim=16,
                                        global_heads=2))
    regions = {m.num_regions for m in b.modules() if hasattr(m, 'num_regions')}
    assert regions == {16} and b.out_norms is not None
    assert [o.shape[1] for o in b(torch.rand(1, 3, 72, 88))] == [16, 32, 64, 128]


def test_single_scale_models_get_a_simple_pyramid():
    b = DenseBackbone('dinat_isotropic_small', out_indices=(1,), pyramid_channels=24,
                      model_kwargs=dict(depth=2, embed_dim=32, num_heads=1, kernel_size=3, dilations=(1, 2)))
    assert b.strides == [4, 8, 16, 32] and b.channels == [24] * 4
    assert [tuple(o.shape[2:]) for o in b(torch.rand(1, 3, 64, 96))] == [(16, 24), (8, 12), (4, 6), (2, 3)]


# ------------------------------------------------------------------------------------ checkpoints
def official_case(parity_dir, name='dinat_reduced'):
    case = torch.load(parity_dir / f'{name}.pt', weights_only=False)
    kw = dict(case['official_kwargs'])
    model_kwargs = dict(embed_dim=kw['embed_dim'], depths=tuple(kw['depths']), num_heads=tuple(kw['num_heads']),
                        kernel_size=kw['kernel_size'], mlp_ratio=kw['mlp_ratio'],
                        dilations=tuple(tuple(d) for d in kw['dilations']))
    return case, model_kwargs


def test_official_mmdet_checkpoint_loads_with_output_norms(parity_dir, tmp_path):
    """An mmdet-format DiNAT checkpoint (official classification keys + ``norm{i}`` under ``backbone.``, plus a
    neck) -> ``init_cfg`` -> the per-stage outputs equal LayerNorm_i of the official features."""
    case, model_kwargs = official_case(parity_dir)
    g = torch.Generator().manual_seed(0)
    dims = [model_kwargs['embed_dim'] * 2 ** i for i in range(4)]
    norms = {i: (1 + 0.1 * torch.randn(c, generator=g), 0.1 * torch.randn(c, generator=g)) for i, c in enumerate(dims)}
    state = {f'backbone.{k}': v for k, v in case['state_dict'].items() if not re.match(r'^(head|norm)\.', k)}
    for i, (w, b) in norms.items():
        state[f'backbone.norm{i}.weight'], state[f'backbone.norm{i}.bias'] = w, b
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'mask_rcnn_dinat.pth'
    torch.save({'meta': {'epoch': 36}, 'state_dict': state}, path)

    b = CHILD.build(dict(type='attnzoo.DiNAT', arch='mini', init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                         **model_kwargs))
    b.init_weights()
    b.eval()
    with torch.no_grad():
        outs = b(case['inputs'][1])  # 96 x 128: the dilated layers pad
    for i, (out, ref) in enumerate(zip(outs, case['features'][1])):
        w, bias = norms[i]
        expected = F.layer_norm(ref.permute(0, 2, 3, 1), (dims[i],), w, bias).permute(0, 3, 1, 2)
        assert (out - expected).abs().max() < 1e-4, i


def test_classification_checkpoint_loads_and_bad_keys_are_named(parity_dir, tmp_path):
    case, model_kwargs = official_case(parity_dir)
    path = tmp_path / 'dinat_cls.pth'
    torch.save(case['state_dict'], path)  # bare official classification state dict (head + final norm included)
    b = DenseBackbone('dinat_mini', model_kwargs=model_kwargs, out_norm=False,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    b.init_weights()
    with torch.no_grad():
        outs = b.eval()(case['inputs'][0])
    for out, ref in zip(outs, case['features'][0]):
        assert (out - ref).abs().max() < 1e-4
    bad = dict(case['state_dict'])
    bad['levels.0.blocks.0.attn.unknown'] = torch.zeros(1)
    with pytest.raises(ValueError, match='unknown'):
        load_dense_checkpoint(b, bad)
    missing = {k: v for k, v in case['state_dict'].items() if 'levels.3' not in k}
    with pytest.raises(ValueError, match='missing'):
        load_dense_checkpoint(b, missing)


def test_init_cfg_checkpoint_is_strict_and_tensors_only(tmp_path):
    """init_cfg: a classification checkpoint of another width is refused with the keys of another size; a
    training file with argparse args loads without trust; a file needing full unpickling is refused."""
    import argparse
    import os
    import timm
    from attnzoo.utils.checkpoint import CheckpointError
    small = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    source = timm.create_model('nat_mini', **small)
    wide = tmp_path / 'wide.pth'
    torch.save(timm.create_model('nat_mini', **{**small, 'embed_dim': 32}).state_dict(), wide)
    backbone = DenseBackbone('nat_mini', model_kwargs=small, out_norm=False,
                             init_cfg=dict(type='Pretrained', checkpoint=str(wide)))
    with pytest.raises(CheckpointError, match='wide.pth.*does not fit(?s:.*)of another size'):
        backbone.init_weights()
    trained = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': source.state_dict(), 'args': argparse.Namespace(model='nat_mini'), 'epoch': 1}, trained)
    load_dense_checkpoint(backbone, str(trained))
    assert torch.equal(backbone.network.state_dict()['stem.proj.0.weight'], source.state_dict()['stem.proj.0.weight'])
    code = tmp_path / 'code.pth'
    torch.save({'model': source.state_dict(), 'hook': os.getpid}, code)
    with pytest.raises(CheckpointError, match='needs full unpickling.*--trust-checkpoint'):
        load_dense_checkpoint(backbone, str(code))


# ------------------------------------------------------------------------------------ real OpenMMLab
def _mm_inputs(n=2, size=(96, 128)):
    return torch.rand(n, 3, *size) * 255


def test_real_mmdet_mask_rcnn_with_an_attnzoo_backbone():
    pytest.importorskip('mmdet.models')
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData
    from mmdet.structures.mask import BitmapMasks

    register_all_modules()
    assert integ.register_in_openmmlab('mmdet') and integ.REGISTERED_IN['mmdet']
    cfg = dict(
        type='MaskRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=False, pad_size_divisor=32, pad_mask=True),
        backbone=dict(type='attnzoo.DiNAT', arch='mini', dense_preset='coco', **{k: v for k, v in TINY.items()
                                                                              if k != 'dilations'}),
        neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=32, num_outs=5),
        rpn_head=dict(type='RPNHead', in_channels=32, feat_channels=32,
                      anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(type='StandardRoIHead',
                      bbox_roi_extractor=dict(type='SingleRoIExtractor', out_channels=32, featmap_strides=[4, 8, 16, 32],
                                              roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)),
                      bbox_head=dict(type='Shared2FCBBoxHead', in_channels=32, fc_out_channels=64, roi_feat_size=7,
                                     num_classes=3,
                                     bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                                     target_stds=[0.1, 0.1, 0.2, 0.2]),
                                     loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                                     loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
                      mask_roi_extractor=dict(type='SingleRoIExtractor', out_channels=32,
                                              featmap_strides=[4, 8, 16, 32],
                                              roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0)),
                      mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=32, conv_out_channels=32,
                                     num_classes=3, loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                                                   loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                   ignore_iof_thr=-1),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5, neg_pos_ub=-1,
                                  add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                    match_low_quality=True, ignore_iof_thr=-1),
                      sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                                   add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
                      rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10,
                                mask_thr_binary=0.5)))
    model = MMDET_MODELS.build(cfg)
    model.init_weights()
    samples = []
    for _ in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128), pad_shape=(96, 128),
                                        scale_factor=(1.0, 1.0)))
        masks = torch.zeros(1, 96, 128, dtype=torch.uint8)
        masks[0, 10:60, 20:80] = 1
        s.gt_instances = InstanceData(bboxes=torch.tensor([[20., 10., 80., 60.]]), labels=torch.tensor([1]),
                                      masks=BitmapMasks(masks.numpy(), 96, 128))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=list(_mm_inputs()), data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(losses)


def test_real_mmseg_backbone_registry():
    pytest.importorskip('mmseg.models')
    from mmseg.registry import MODELS as MMSEG_MODELS
    assert integ.register_in_openmmlab('mmseg') and integ.REGISTERED_IN['mmseg']
    b = MMSEG_MODELS.build(dict(type='attnzoo.DiNAT', arch='mini', dense_preset='ade20k',
                                **{k: v for k, v in TINY.items() if k != 'dilations'}))
    assert len(b(_mm_inputs(1, (64, 64)))) == 4
