"""attnzoo.models.dense: DenseBackbone's ``frozen_stages`` against torchvision's ``trainable_layers`` (stages
counted in the network, whatever ``out_indices`` returns; the last stage can be frozen; a timm CNN whose feature
index 0 is its stem), the output norms frozen with their own stage, and the presets' depths read off the variant
(tests/tasks/test_layering.py checks that the module needs no mmengine)."""
import pytest
import torch.nn as nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from attnzoo.models.dense import DenseBackbone, dense_model_kwargs

NAT_TINY = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3, mlp_ratio=1.0)


def _trainable(module: nn.Module) -> set:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _torchvision_trainable(trainable_layers: int) -> set:
    """The parameter names torchvision's ResNet-FPN backbone trains with ``trainable_layers`` (BatchNorm as
    parameters, as timm's ResNet has them)."""
    tv = resnet_fpn_backbone(backbone_name='resnet18', weights=None, norm_layer=nn.BatchNorm2d,
                             trainable_layers=trainable_layers)
    return _trainable(tv.body)


@pytest.mark.parametrize('out_indices', [(1, 2, 3, 4), (2, 3, 4)])
def test_resnet_frozen_stages_are_torchvision_trainable_layers(out_indices):
    """timm's ResNet (random init): feature index 0 is the stem, so ``frozen_stages=k`` freezes conv1 / bn1 and
    layer1..layer<k>, exactly ``trainable_layers = 4 - k``, also for stages that are not returned."""
    for frozen_stages in range(-1, 5):
        b = DenseBackbone('resnet18', out_indices=out_indices, frozen_stages=frozen_stages)
        assert b.num_stages == 4
        assert _trainable(b.network) == _torchvision_trainable(4 - frozen_stages), frozen_stages
    with pytest.raises(ValueError, match=r'frozen_stages=5: valid -1 .* 4 '):
        DenseBackbone('resnet18', out_indices=out_indices, frozen_stages=5)


def test_resnet_frozen_stage_stays_in_eval_mode():
    b = DenseBackbone('resnet18', out_indices=(1, 2, 3, 4), frozen_stages=1).train()
    net = b.network
    assert not net.bn1.training and not net.layer1.training and net.layer2.training


def test_out_norms_freeze_with_their_own_stage_when_out_indices_skip_stage_0():
    """RetinaNet / FCOS's ``out_indices=(1, 2, 3)``: norm ``i`` is the output of stage ``i + 1``."""
    one = DenseBackbone('nat_mini', out_indices=(1, 2, 3), frozen_stages=1, model_kwargs=NAT_TINY)
    net = one.network
    assert not _trainable(net.stem) and not _trainable(net.stages[0])
    assert _trainable(net.stages[1]) and all(_trainable(norm) for norm in one.out_norms)
    two = DenseBackbone('nat_mini', out_indices=(1, 2, 3), frozen_stages=2, model_kwargs=NAT_TINY)
    assert [bool(_trainable(norm)) for norm in two.out_norms] == [False, True, True]
    assert not _trainable(two.network.stages[1]) and _trainable(two.network.stages[2])


def test_the_last_stage_can_be_frozen():
    b = DenseBackbone('nat_mini', out_indices=(1, 2, 3), frozen_stages=4, model_kwargs=NAT_TINY)
    assert not _trainable(b)
    b.train()
    assert not b.network.stages[3].training and not b.out_norms[2].training
    with pytest.raises(ValueError, match='frozen_stages=5'):
        DenseBackbone('nat_mini', out_indices=(1, 2, 3), frozen_stages=5, model_kwargs=NAT_TINY)


def test_a_flattened_feature_wrapper_is_frozen_by_its_stage_names():
    """timm's FeatureListNet (ConvNeXt) names stage ``stages.0`` in feature_info, ``stages_0`` as a child."""
    b = DenseBackbone('convnext_atto', out_indices=(1, 2, 3), frozen_stages=2)
    net = b.network
    assert not _trainable(net.stem_0) and not _trainable(net.stem_1)
    assert not _trainable(net.stages_1) and _trainable(net.stages_2)


def test_dinat_preset_depths_come_from_the_variant():
    assert dense_model_kwargs('dinat_s_large_384', 'coco')['dilations'][2] == (1, 3, 1, 5, 1, 7) * 3
    assert [len(d) for d in dense_model_kwargs('dinat_mini', 'coco')['dilations']] == [3, 4, 6, 5]
    assert [len(d) for d in dense_model_kwargs('dinat_tiny', 'coco', dict(depths=(1, 2, 1, 1)))['dilations']] == [
        1, 2, 1, 1]


def test_is_init_follows_mmengine_protocol():
    b = DenseBackbone('nat_mini', model_kwargs=NAT_TINY)
    assert not b.is_init
    b.init_weights()
    assert b.is_init


def test_single_scale_model_freezes_blocks_and_its_stem_parameters():
    """A ViT-style model: its stages are the blocks the features-only network holds, the stem includes the
    tokens / position embedding (parameters of the model itself), and the simple pyramid is never frozen."""
    b = DenseBackbone('sparsifiner_deit_tiny', out_indices=(1,), pyramid_channels=16, frozen_stages=1,
                      model_kwargs=dict(depth=2, embed_dim=32, num_heads=1, img_size=64, basis_topk=2))
    net = b.network
    assert b.num_stages == 2
    assert not net.cls_token.requires_grad and not net.pos_embed.requires_grad
    assert not _trainable(net.patch_embed) and not _trainable(net.blocks[0]) and _trainable(net.blocks[1])
    assert _trainable(b.pyramid) == {n for n, _ in b.pyramid.named_parameters()}
    with pytest.raises(ValueError, match='frozen_stages=3'):
        DenseBackbone('sparsifiner_deit_tiny', out_indices=(1,), pyramid_channels=16, frozen_stages=3,
                      model_kwargs=dict(depth=2, embed_dim=32, num_heads=1, img_size=64, basis_topk=2))
