"""NAT / DiNAT / DiNAT_s / isotropic NAT: registry, size, timm contract, checkpoint conversion and parity.

Most tests use narrow, shallow versions of the registered variants (same code paths, ~1/100 of the cost); the
full-size variants are only built on the ``meta`` device (params) or for the MAC counts.
"""
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg, group_parameters
from timm.optim import create_optimizer_v2

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.models.nat import NAT, NATIsotropic, checkpoint_filter_fn, model_args_from_official
from attnzoo.utils import count_macs, count_params

# -------------------------------------------------------------------------------------------------------------
# Reference figures: official READMEs (params M, MACs G at the variant's resolution) and the counts of the
# official code (../shared/papers/dinat_natten.md, section 3).
# -------------------------------------------------------------------------------------------------------------

# name: (README params, README GMACs, official-code params)
README = {
    'nat_mini': (20, 2.7, 19.98),
    'nat_tiny': (28, 4.3, 27.90),
    'nat_small': (51, 7.8, 50.74),
    'nat_base': (90, 13.7, 89.77),
    'dinat_mini': (20, 2.7, 19.98),
    'dinat_tiny': (28, 4.3, 27.90),
    'dinat_small': (51, 7.8, 50.72),
    'dinat_base': (90, 13.7, 89.77),
    'dinat_large': (200, 30.6, 200.94),
    'dinat_large_384': (200, 89.7, 200.94),
    # The README repeats the 7x7 model's "200M"; the larger RPB tables add 0.2M (official code: 201.14M).
    'dinat_large_384_11x11': (None, 92.4, 201.14),
    'dinat_s_tiny': (28, 4.5, 28.29),
    'dinat_s_small': (50, 8.7, 49.61),
    'dinat_s_base': (88, 15.4, 87.77),
    'dinat_s_large': (197, 34.5, 196.53),
    'dinat_s_large_384': (197, 101.5, 196.53),
    'nat_isotropic_small': (22, 4.3, 22.00),
    'dinat_isotropic_small': (22, 4.3, 22.00),
    'nat_isotropic_base': (86, 16.9, 86.47),
    'dinat_isotropic_base': (86, 16.9, 86.47),
}
ALL_VARIANTS = sorted(README) + ['dinat_large_11x11']
SLOW_MACS_GMACS = 10.  # bigger variants take 3-10 s each to trace on one core

# Narrow, shallow stand-ins for each architecture kind (same classes and code paths as the registered models).
DILATIONS = ((1, 8), (1, 4), (1, 2), (1,))
TINY = {
    'dinat_mini': dict(embed_dim=32, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), dilations=DILATIONS),
    'nat_small': dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),  # layer scale
    'dinat_s_tiny': dict(embed_dim=32, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), dilations=DILATIONS),
    'dinat_isotropic_small': dict(embed_dim=64, depth=4, num_heads=2, dilations=(1, 2, 1, 2)),
}
HIERARCHICAL = ['dinat_mini', 'nat_small', 'dinat_s_tiny']
NAT_FIXTURES = ['nat_reduced', 'dinat_reduced', 'dinat_reduced_layerscale']


def create_tiny(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, **{**TINY[name], **kwargs})


def image(*size: int, batch: int = 1, chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, chans, *size, generator=torch.Generator().manual_seed(0))


def to_official(state_dict: dict, model: nn.Module) -> dict:
    """Our keys -> the official release's keys (inverse of ``checkpoint_filter_fn``), for round-trip tests."""
    if isinstance(model, NATIsotropic):
        stage_prefix = None
    else:
        stage_prefix = 'levels' if isinstance(model.stem.proj, nn.Sequential) else 'layers'
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r'^stem\.', 'patch_embed.', key)
        key = re.sub(r'^blocks\.(\d+)\.', r'layers.\1.', key)
        if stage_prefix:
            key = re.sub(r'^stages\.(\d+)\.downsample\.',
                         lambda m: f'{stage_prefix}.{int(m.group(1)) - 1}.downsample.', key)
            key = re.sub(r'^stages\.(\d+)\.blocks\.', rf'{stage_prefix}.\1.blocks.', key)
        key = key.replace('.ls1.gamma', '.gamma1').replace('.ls2.gamma', '.gamma2').replace('head.fc.', 'head.')
        out[key] = value
    return out


def final_map_size(model: nn.Module, size) -> tuple:
    """Spatial size of ``forward_features``: every stride-2 step rounds up (padding), the patch-16 stem too."""
    if isinstance(model, NATIsotropic):
        return tuple(-(-s // 16) for s in size)
    for _ in range(5):
        size = tuple(-(-s // 2) for s in size)
    return size


def load_fixture(parity_dir: Path, case: str) -> dict:
    return torch.load(parity_dir / f'{case}.pt', weights_only=False)


def fixture_model_args(fixture: dict):
    return model_args_from_official(fixture['official_entry'].split('::')[-1], fixture['official_kwargs'])


# -------------------------------------------------------------------------------------------------------------
# Registry, pretrained configs, size
# -------------------------------------------------------------------------------------------------------------

def test_every_variant_is_registered():
    assert set(timm.list_models(module='nat')) == set(ALL_VARIANTS)


@pytest.mark.parametrize('name', ALL_VARIANTS)
def test_pretrained_cfg(name):
    model = timm.create_model(name, device='meta')
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://shi-labs.com/projects/') and cfg['url'].endswith('.pth')
    assert cfg['license'] == 'mit'
    assert cfg['paper_ids'] in ('arXiv:2204.07143', 'arXiv:2209.15001')
    assert cfg['mean'] == IMAGENET_DEFAULT_MEAN and cfg['std'] == IMAGENET_DEFAULT_STD
    size = cfg['input_size'][-1]
    assert cfg['crop_pct'] == (1.0 if size == 384 else 0.875)
    assert cfg['num_classes'] == (21841 if cfg['tag'] == 'in22k' else 1000) == model.num_classes
    stride = 16 if isinstance(model, NATIsotropic) else 32
    assert cfg['pool_size'] == (size // stride, size // stride)
    assert isinstance(model.get_submodule(cfg['first_conv']), nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()


def test_pretrained_tags():
    tags = timm.list_pretrained('*nat*')
    assert {'dinat_large.in22k_ft_in1k', 'dinat_large.in22k', 'dinat_large_11x11.in22k',
            'dinat_s_large.in22k_ft_in1k', 'dinat_s_large.in22k', 'dinat_large_384_11x11.in22k_ft_in1k'} <= set(tags)
    assert get_pretrained_cfg('dinat_large.in22k').num_classes == 21841
    assert get_pretrained_cfg('nat_mini.in1k').paper_ids == 'arXiv:2204.07143'


def test_variant_architectures():
    """The per-variant details that are easy to get wrong (notes section 11)."""
    small, dsmall = (timm.create_model(n, device='meta') for n in ('nat_small', 'dinat_small'))
    assert isinstance(small.stages[0].blocks[0].ls1, nn.Module) and hasattr(small.stages[0].blocks[0].ls1, 'gamma')
    assert isinstance(dsmall.stages[0].blocks[0].ls1, nn.Identity)  # DiNAT-S has no layer scale, NAT-S has
    dilations = lambda m: [[b.attn.dilation[0] for b in s.blocks] for s in m.stages]  # noqa: E731
    assert dilations(timm.create_model('dinat_mini', device='meta')) == [
        [1, 8, 1], [1, 4, 1, 4], [1, 2] * 3, [1] * 5]
    assert dilations(timm.create_model('dinat_large_384', device='meta'))[:3] == [
        [1, 13, 1], [1, 6, 1, 6], [1, 3] * 9]
    k11 = timm.create_model('dinat_large_384_11x11', device='meta')
    assert dilations(k11)[:2] == [[1, 8, 1], [1, 4, 1, 4]] and k11.stages[0].blocks[0].attn.kernel_size[0] == 11
    assert dilations(timm.create_model('dinat_s_large_384', device='meta'))[:2] == [[1, 13], [1, 6]]
    iso = timm.create_model('dinat_isotropic_base', device='meta')
    assert [b.attn.dilation[0] for b in iso.blocks] == [1, 2] * 6 and iso.blocks[0].attn.num_heads == 24


@pytest.mark.parametrize('name', sorted(README))
def test_params_match_readme(name):
    readme_params, _, official_params = README[name]
    params = count_params(timm.create_model(name, device='meta')) / 1e6
    assert abs(params - official_params) <= 0.005, f'{name}: {params:.3f}M vs official code {official_params}M'
    if readme_params is not None:  # README figures are rounded to 1M
        assert abs(params - readme_params) <= max(0.005 * readme_params, 0.5), f'{params:.2f}M vs {readme_params}M'


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if README[n][1] > SLOW_MACS_GMACS else n for n in sorted(README)])
def test_macs_match_readme(name):
    readme_gmacs = README[name][1]
    model = timm.create_model(name).eval()
    gmacs = count_macs(model, model.pretrained_cfg['input_size']) / 1e9
    assert abs(gmacs - readme_gmacs) <= 0.02 * readme_gmacs, f'{name}: {gmacs:.3f} GMACs vs README {readme_gmacs}'


def test_count_macs_adds_attention_term():
    """Attention MACs (2*N*C*K^2 per layer) come on top of the layer count (fvcore's table); batch scales the total."""
    model = timm.create_model('nat_mini', embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()
    one, two = count_macs(model, (3, 64, 64)), count_macs(model, image(64, 64, batch=2))
    assert two == 2 * one
    from attnzoo.utils.flops import layer_macs
    maps = [(16, 32), (8, 64), (4, 128), (2, 256)]  # (side, channels) per stage at 64 px
    expected_na = sum(2 * max(s, 7) ** 2 * c * 49 for s, c in maps)  # maps below 7x7 are padded to 7x7
    assert one - layer_macs(model, image(64, 64)) == expected_na


# -------------------------------------------------------------------------------------------------------------
# Forward, features and the timm model contract (tiny configs)
# -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('size', [(224, 224), (96, 128), (97, 131)])
def test_forward_any_size(name, size):
    """Maps smaller than kernel*dilation (e.g. 24x32 with dilation 8) are padded by the attention layers."""
    model = create_tiny(name, num_classes=5).eval()
    with torch.no_grad():
        feats = model.forward_features(image(*size))
        out = model.forward_head(feats)
    assert feats.shape == (1, *final_map_size(model, size), model.num_features)
    if size == (224, 224):
        assert feats.shape[1:3] == model.pretrained_cfg['pool_size']
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', HIERARCHICAL)
def test_features_only_getter_and_list(name):
    """Default (getter): NCHW maps. ``feature_cls='list'`` (FeatureListNet): the same maps in the stages' native
    NHWC layout, as timm's Swin does, flagged by ``output_fmt``."""
    x = image(96, 96)
    torch.manual_seed(0)
    getter = create_tiny(name, features_only=True).eval()
    torch.manual_seed(0)
    listnet = create_tiny(name, features_only=True, feature_cls='list').eval()
    for net in (getter, listnet):
        assert net.feature_info.reduction() == [4, 8, 16, 32]
        assert net.feature_info.channels() == [32, 64, 128, 256]
    assert listnet.output_fmt == 'NHWC'
    with torch.no_grad():
        a, b = getter(x), listnet(x)
    assert [tuple(f.shape) for f in a] == [(1, 32, 24, 24), (1, 64, 12, 12), (1, 128, 6, 6), (1, 256, 3, 3)]
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb.permute(0, 3, 1, 2))
    subset = create_tiny(name, features_only=True, out_indices=(1, -1))
    assert subset.feature_info.channels() == [64, 256]
    assert [f.shape[1] for f in subset(x)] == [64, 256]
    pruned = create_tiny(name, features_only=True, out_indices=(0, 1))
    assert len(pruned.model.stages) == 2  # stages after the last requested one are dropped


def test_features_only_isotropic_uses_getter():
    model = create_tiny('dinat_isotropic_small', features_only=True, out_indices=(0, 2)).eval()
    assert model.feature_info.reduction() == [16, 16] and model.feature_info.channels() == [64, 64]
    with torch.no_grad():
        feats = model(image(96, 112))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 6, 7)] * 2
    assert len(model.model.blocks) == 3  # pruned after the last requested block


@pytest.mark.parametrize('name', sorted(TINY))
def test_forward_intermediates(name):
    model = create_tiny(name).eval()
    x = image(96, 96)
    n = len(model.feature_info)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(inter) == n
        assert [f.shape[1] for f in inter] == [info['num_chs'] for info in model.feature_info]
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        torch.testing.assert_close(last[0], inter[-1])
        early = model.forward_intermediates(x, indices=[0, -2], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[1], inter[-2])
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
        torch.testing.assert_close(nhwc[0].permute(0, 3, 1, 2), inter[0])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NLC')


@pytest.mark.parametrize('name', sorted(TINY))
def test_prune_intermediate_layers(name):
    model = create_tiny(name).eval()
    x = image(96, 96)
    with torch.no_grad():
        before = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1], prune_norm=True) == [0, 1]
    assert model.num_classes == 0 and model.num_features == model.feature_info[1]['num_chs']
    with torch.no_grad():
        after = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    model.train()
    sum(f.sum() for f in model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)).backward()
    assert all(p.grad is not None for p in model.parameters()), 'pruned model has unused parameters'


@pytest.mark.parametrize('name', sorted(TINY))
def test_classifier_and_pooling(name):
    model = create_tiny(name).eval()
    x = image(96, 96, batch=2)
    assert isinstance(model.get_classifier(), nn.Linear)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, '')
        unpooled = model(x)
        assert unpooled.ndim == 4 and unpooled.shape[-1] == model.num_features  # NHWC, output_fmt
        model.reset_classifier(7, 'max')
        assert model(x).shape == (2, 7) and model.global_pool == 'max'
        model.reset_classifier(3)
        assert model.global_pool == 'max'  # None keeps the pooling
    catavgmax = create_tiny(name, global_pool='catavgmax', num_classes=0)
    assert catavgmax.head_hidden_size == 2 * catavgmax.num_features
    headless = create_tiny(name, num_classes=0, global_pool='')
    assert headless.num_classes == 0 and headless(x).ndim == 4


@pytest.mark.parametrize('name', ['dinat_mini', 'dinat_isotropic_small'])
def test_in_chans(name):
    model = create_tiny(name, in_chans=1, num_classes=4).eval()
    with torch.no_grad():
        assert model(image(64, 64, chans=1)).shape == (1, 4)
    with pytest.raises(ValueError, match=r'x: expected an image batch of shape \[B, in_chans=1, H, W\]'):
        model(image(64, 64, chans=3))


@pytest.mark.parametrize('name', sorted(TINY))
def test_backward_reaches_every_parameter(name):
    model = create_tiny(name, num_classes=42, drop_path_rate=0.1).train()
    model(image(96, 96, batch=2)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'


@pytest.mark.parametrize('name', ['dinat_mini', 'dinat_isotropic_small'])
def test_grad_checkpointing(name):
    model = create_tiny(name).eval()
    x = image(96, 96)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), ref)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('name', sorted(TINY))
def test_group_matcher_and_no_weight_decay(name):
    model = create_tiny(name)
    groups = group_parameters(model, model.group_matcher())
    assert len(groups) >= 3 and sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert 2 <= len(coarse) <= len(groups)
    rpb_names = {n for n, _ in model.named_parameters() if n.endswith('attn.rpb')}
    assert rpb_names and model.no_weight_decay() == rpb_names
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    rpb_ids = {id(p) for n, p in model.named_parameters() if n in rpb_names}
    for group in optimizer.param_groups:
        if any(id(p) in rpb_ids for p in group['params']):
            assert group['weight_decay'] == 0.


@pytest.mark.parametrize('name', sorted(TINY))
def test_device_and_dtype(name):
    meta = create_tiny(name, device='meta')
    assert all(t.device.type == 'meta' for t in list(meta.parameters()) + list(meta.buffers()))
    double = create_tiny(name, dtype=torch.float64).eval()
    assert all(p.dtype == torch.float64 for p in double.parameters())
    with torch.no_grad():
        assert double(image(64, 64).double()).dtype == torch.float64
        assert double.to(torch.bfloat16)(image(64, 64).bfloat16()).dtype == torch.bfloat16


def test_unknown_kwarg_raises_type_error():
    with pytest.raises(TypeError):
        timm.create_model('dinat_mini', not_a_model_arg=1, device='meta')


@pytest.mark.parametrize('kwargs, match', [
    (dict(dilations=((1,), (1,), (1,))), r'dilations: expected one list per stage \(4 stages'),
    (dict(dilations=((1,), (1, 2), (1,), (1,))), r'dilations\[1\]: expected 1 values'),
    (dict(dilations=((1,), (0,), (1,), (1,))), r'dilations\[1\]: every dilation must be an integer >= 1'),
    (dict(num_heads=(1, 2, 4)), r'num_heads: expected one value per stage'),
    (dict(stem_type='convnext'), r"stem_type: expected one of \('conv', 'patch'\)"),
    (dict(downsample_type='pool'), r"downsample_type: expected one of \('conv', 'merge'\)"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = {**dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), **kwargs}
    with pytest.raises(ValueError, match=match):
        NAT(**args, device='meta')


def test_dinat_entrypoints_keep_the_dilation_pattern_for_other_depths():
    model = timm.create_model('dinat_mini', depths=(2, 3, 1, 1), device='meta')
    assert [[b.attn.dilation[0] for b in s.blocks] for s in model.stages] == [[1, 8], [1, 4, 1], [1], [1]]
    iso = timm.create_model('dinat_isotropic_small', depth=3, device='meta')
    assert [b.attn.dilation[0] for b in iso.blocks] == [1, 2, 1]
    with pytest.raises(ValueError, match=r'depths: dinat_mini derives its dilations for 4 stages.*pass dilations='):
        timm.create_model('dinat_mini', depths=(1, 1, 1), num_heads=(1, 2, 4), device='meta')
    with pytest.raises(ValueError, match=r'dilations: expected 2 values'):
        timm.create_model('dinat_isotropic_small', depth=2, dilations=(1, 2, 1), device='meta')


# -------------------------------------------------------------------------------------------------------------
# Checkpoint conversion
# -------------------------------------------------------------------------------------------------------------

def test_checkpoint_filter_key_mapping():
    model = create_tiny('nat_small', device='meta')
    official = to_official(model.state_dict(), model)
    assert 'levels.0.downsample.reduction.weight' in official and 'levels.1.blocks.0.gamma1' in official
    assert 'patch_embed.proj.1.weight' in official and 'head.weight' in official
    out = checkpoint_filter_fn(official, model)
    assert out.keys() == model.state_dict().keys()
    assert out['stages.1.downsample.reduction.weight'] is official['levels.0.downsample.reduction.weight']
    assert out['stages.1.blocks.0.ls1.gamma'] is official['levels.1.blocks.0.gamma1']
    assert out['head.fc.weight'] is official['head.weight']


@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('wrapper', [None, 'model', 'state_dict', 'params_ema'])
def test_checkpoint_filter_round_trip(name, wrapper):
    model = create_tiny(name)
    ours = model.state_dict()
    official = to_official(ours, model)
    converted = checkpoint_filter_fn(official if wrapper is None else {wrapper: official, 'epoch': 3}, model)
    assert converted.keys() == ours.keys()
    assert all(converted[k] is official_v for k, official_v in zip(ours, official.values()))
    assert checkpoint_filter_fn(ours, model).keys() == ours.keys()  # idempotent on our format


@pytest.mark.parametrize('name', ['dinat_mini', 'dinat_isotropic_small'])
def test_headless_checkpoint_reload(name):
    headless = create_tiny(name, num_classes=0)
    state = headless.state_dict()
    assert not any(k.startswith('head.') for k in state)
    fresh = create_tiny(name, num_classes=0)
    fresh.load_state_dict(checkpoint_filter_fn(state, fresh), strict=True)
    classifier_model = create_tiny(name)  # headless weights into a model with a classifier: only the head missing
    result = classifier_model.load_state_dict(checkpoint_filter_fn(state, classifier_model), strict=False)
    assert sorted(result.missing_keys) == ['head.fc.bias', 'head.fc.weight'] and not result.unexpected_keys


def test_checkpoint_filter_lists_unmapped_keys():
    model = create_tiny('dinat_mini', device='meta')
    official = to_official(model.state_dict(), model)
    official['norm0.weight'] = torch.zeros(32)  # a detection checkpoint's extra per-level norms
    official['levels.9.blocks.0.attn.rpb'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"2 key\(s\) do not map onto NAT.*'norm0.weight'.*levels\.9"):
        checkpoint_filter_fn(official, model)
    # a NAT checkpoint does not silently load into DiNAT_s (different stem / downsampler)
    with pytest.raises(ValueError, match='patch_embed.proj.0.weight'):
        checkpoint_filter_fn(to_official(model.state_dict(), model), create_tiny('dinat_s_tiny', device='meta'))


def test_checkpoint_filter_resizes_rpb_to_kernel():
    """7x7 weights into an 11x11 model (how the official 11x11 ImageNet-22K checkpoint was made)."""
    k7 = create_tiny('dinat_mini')
    k11 = create_tiny('dinat_mini', kernel_size=11)
    converted = checkpoint_filter_fn(to_official(k7.state_dict(), k7), k11)
    assert converted['stages.0.blocks.0.attn.rpb'].shape == (1, 21, 21)
    k11.load_state_dict(converted, strict=True)


@pytest.mark.parametrize('name', ['dinat_s_tiny', 'dinat_isotropic_small'])
def test_pretrained_file_in_official_format(name, tmp_path):
    """``pretrained=True`` + ``pretrained_cfg_overlay=dict(file=...)`` loads an official-format file."""
    source = create_tiny(name).eval()
    path = tmp_path / 'official.pth'
    torch.save(to_official(source.state_dict(), source), path)
    loaded = create_tiny(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = image(96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------------------
# Parity with the official implementation (../shared/parity fixtures)
# -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', NAT_FIXTURES)
def test_parity_with_official(parity_dir, case):
    fixture = load_fixture(parity_dir, case)
    model_cls, kwargs = fixture_model_args(fixture)
    model = model_cls(**kwargs)
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    model.eval()
    atol = fixture['atol_suggested_float32']
    for x, expected, expected_feats in zip(fixture['inputs'], fixture['outputs'], fixture['features']):
        with torch.no_grad():
            final, feats = model.forward_intermediates(x)
            out = model.forward_head(final)
        err = (out - expected).abs().max().item()
        assert err <= atol, f'{case} {tuple(x.shape)}: output max abs err {err:.2e} > {atol}'
        for i, (f, ef) in enumerate(zip(feats, expected_feats or [])):
            ferr = (f - ef).abs().max().item()
            assert ferr <= atol, f'{case} {tuple(x.shape)} stage {i}: feature max abs err {ferr:.2e} > {atol}'


@pytest.mark.parametrize('num_classes, in_chans', [(1000, 3), (10, 3), (1000, 1)])
def test_pretrained_overlay_with_official_file(parity_dir, tmp_path, num_classes, in_chans):
    """The timm loading path end to end: a bare official DiNAT state dict on disk -> create_model(pretrained=True),
    with head replacement (num_classes) and first-conv adaptation (in_chans) handled by timm."""
    fixture = load_fixture(parity_dir, 'dinat_reduced')
    path = tmp_path / 'dinat_reduced.pth'
    torch.save(fixture['state_dict'], path)
    _, kwargs = fixture_model_args(fixture)
    kwargs.update(num_classes=num_classes, in_chans=in_chans)
    model = timm.create_model(
        'dinat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()
    x = fixture['inputs'][1]
    with torch.no_grad():
        out = model(x if in_chans == 3 else x.sum(1, keepdim=True))
    assert out.shape == (2, num_classes)
    if (num_classes, in_chans) == (1000, 3):
        assert (out - fixture['outputs'][1]).abs().max().item() <= fixture['atol_suggested_float32']


def test_features_only_pretrained_matches_official_features(parity_dir, tmp_path):
    fixture = load_fixture(parity_dir, 'nat_reduced')
    path = tmp_path / 'nat_reduced.pth'
    torch.save({'model': fixture['state_dict']}, path)
    _, kwargs = fixture_model_args(fixture)
    model = timm.create_model(
        'nat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), features_only=True, **kwargs).eval()
    with torch.no_grad():
        feats = model(fixture['inputs'][1])
    for f, expected in zip(feats, fixture['features'][1]):
        assert (f - expected).abs().max().item() <= fixture['atol_suggested_float32']


@pytest.mark.parametrize('name', sorted(TINY))
def test_fx_feature_extraction_matches_eager(name):
    """timm's FX contract: the attention layer is a registered leaf, the rest traces."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor
    model = create_tiny(name).eval()
    x = image(64, 80)
    fx = create_feature_extractor(model, return_nodes=['head'], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    with torch.no_grad():
        torch.testing.assert_close(fx(x)['head'], model(x))
