"""BiFormer family: registry, size, timm contract, checkpoint conversion and parity with the official code.

Most tests use narrow, shallow stand-ins of the registered variants (same classes and code paths); the full-size
variants are built on the ``meta`` device (params) or for the MAC counts.
"""
import argparse
import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import group_parameters

import attnzoo  # noqa: F401  (registers the models)
import attnzoo.ops as ops
from attnzoo.models.biformer import BiFormer, BiLevelRoutingAttention, checkpoint_filter_fn
from attnzoo.utils import count_macs, count_params

# name: (README params M, README GMACs, official-code params M, official-code fvcore GMACs)
README = {
    'biformer_tiny': (13.1, 2.2, 13.143, 2.228),
    'biformer_small': (25.5, 4.5, 25.536, 4.487),
    'biformer_base': (56.8, 9.8, 56.805, 9.795),
    'biformer_stl': (28.4, 4.6, 28.373, 4.590),
    # the official count is 4.593: fvcore also counts the permutation einsums of ops/torch/rrsda.py (~2.7 M)
    'biformer_stl_nchw': (28.4, 4.6, 28.373, 4.593),
}
SLOW_MACS = {'biformer_small', 'biformer_base', 'biformer_stl_nchw'}
TINY_ARGS = dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1))
TINY = {'biformer_tiny': TINY_ARGS, 'biformer_stl': TINY_ARGS, 'biformer_stl_nchw': TINY_ARGS}
FIXTURES = ['biformer_reduced', 'biformer_reduced_autopad']


def create_tiny(name, **kwargs):
    return timm.create_model(name, **{**TINY[name], **kwargs})


def image(*size, batch=1, chans=3):
    return torch.randn(batch, chans, *size, generator=torch.Generator().manual_seed(0))


def to_official(state_dict, model):
    """Our keys -> the official release's (inverse of ``checkpoint_filter_fn``), for round trips."""
    stl = model.stages[0].blocks[0].pos_embed is None
    nchw = model.stages[0].blocks[0].attn.attn_layout == 'nchw'
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r'^stem\.', 'downsample_layers.0.', key)
        key = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', key)
        if not stl:
            key = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', key)
        is_bra = bool(re.match(r'^stages\.[012]\.', key)) and '.attn.' in key
        if is_bra:
            key = key.replace('.attn.qkv.', '.attn.qkv_linear.' if nchw else '.attn.qkv.qkv.')
            key = key.replace('.attn.proj.', '.attn.output_linear.' if nchw else '.attn.wo.')
        key = key.replace('.mlp.fc1.', '.mlp.0.').replace('.mlp.fc2.', '.mlp.2.' if stl else '.mlp.3.')
        key = key.replace('head.fc.', 'head.')
        if nchw and value.ndim == 2 and ('.mlp.' in key or '.attn.' in key):
            value = value[:, :, None, None]
        out[key] = value
    return out


def load_fixture(parity_dir, case):
    return torch.load(parity_dir / f'{case}.pt', weights_only=False)


def fixture_model(fixture):
    kw = fixture['official_kwargs']
    assert kw['kv_downsample_mode'] == 'identity' and not kw['param_routing'] and kw['layer_scale_init_value'] < 0
    model = BiFormer(embed_dims=kw['embed_dim'], depths=kw['depth'], head_dim=kw['head_dim'], num_regions=kw['n_win'],
                     topks=kw['topks'], mlp_ratios=kw['mlp_ratios'], side_dwconv=kw['side_dwconv'],
                     pos_embed_kernel=kw['before_attn_dwconv'], num_classes=kw['num_classes'])
    model.load_state_dict(checkpoint_filter_fn({'model': fixture['state_dict']}, model), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------- registry and size

def test_every_variant_is_registered():
    assert set(timm.list_models('biformer*')) == set(README)
    assert set(timm.list_pretrained('biformer*')) == {f'{n}.in1k' for n in README}


@pytest.mark.parametrize('name', sorted(README))
def test_pretrained_cfg(name):
    model = timm.create_model(name, device='meta')
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://api.onedrive.com/v1.0/shares/s!') and cfg['url'].endswith('/root/content')
    assert cfg['license'] == 'mit' and cfg['paper_ids'] == 'arXiv:2303.08810'
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == (7, 7)
    assert isinstance(model.get_submodule(cfg['first_conv']), nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()


@pytest.mark.parametrize('name', sorted(README))
def test_params_match_readme(name):
    readme, _, official, _ = README[name]
    params = count_params(timm.create_model(name, device='meta')) / 1e6
    assert abs(params - official) < 0.0005 and round(params, 1) == readme


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MACS else n
                                  for n in sorted(README)])
def test_macs_match_readme(name):
    _, readme, _, official = README[name]
    model = timm.create_model(name).eval()
    gmacs = count_macs(model, (3, 224, 224)) / 1e9
    assert round(gmacs, 1) == readme
    assert abs(gmacs - official) < 0.004, f'{name}: {gmacs:.4f} vs official fvcore {official}'


def test_variant_architectures():
    """The traps: full-channel BRA scale, 8-head stage-4 attention without qkv bias, LePE of x vs v, BN head norm."""
    small = timm.create_model('biformer_small', device='meta')
    bra = small.stages[2].blocks[0].attn
    assert isinstance(bra, BiLevelRoutingAttention) and bra.num_heads == 8 and bra.scale == 256 ** -0.5
    assert [s.blocks[0].attn.topk for s in small.stages[:3]] == [1, 4, 16]
    glob = small.stages[3].blocks[0].attn
    assert glob.num_heads == 8 and glob.qkv.bias is None and glob.lepe_on == 'x' and glob.scale == 64 ** -0.5
    assert small.stages[0].blocks[0].pos_embed.padding == (1, 1) and small.stages[0].blocks[0].norm1.eps == 1e-6
    assert isinstance(small.norm, nn.BatchNorm2d) and small.stages[0].blocks[0].mlp.fc1.out_features == 192
    stl = timm.create_model('biformer_stl', device='meta')
    assert stl.stages[0].blocks[0].pos_embed is None and stl.stages[0].blocks[0].mlp.fc1.out_features == 384
    assert timm.create_model('biformer_stl_nchw', device='meta').stages[3].blocks[0].attn.lepe_on == 'v'


def test_count_macs_includes_routing_and_attention():
    model = create_tiny('biformer_tiny').eval()
    from attnzoo.utils.flops import layer_macs
    attention = count_macs(model, (3, 224, 224)) - layer_macs(model, image(224, 224))
    expected = 0
    for side, c, k, blocks in ((56, 32, 1, 1), (28, 64, 4, 1), (14, 96, 16, 2)):
        n = side * side
        expected += blocks * (49 * 49 * c + n * k * (n // 49) * 2 * c)
    expected += 49 * 49 * 2 * 128  # stage-4 global attention
    assert attention == expected


# ------------------------------------------------------------------------------------------- timm contract

@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('size', [(224, 224), (160, 200), (97, 131)])
def test_forward_any_size(name, size):
    model = create_tiny(name, num_classes=5).eval()
    if name == 'biformer_stl_nchw' and size == (97, 131):  # stage 3 is 6x8: fewer tokens than regions per side
        with pytest.raises(ValueError, match=r'\(nchw\): the map \(6x8\) must be at least num_regions=7'):
            model(image(*size))
        return
    with torch.no_grad():
        feats = model.forward_features(image(*size))
        out = model.forward_head(feats)
    assert out.shape == (1, 5) and torch.isfinite(out).all()
    if size == (224, 224):
        assert feats.shape == (1, 128, 7, 7)


def test_no_auto_pad_raises_named_error():
    model = create_tiny('biformer_tiny', auto_pad=False).eval()
    with pytest.raises(ValueError, match=r'not divisible by num_regions=7 and auto_pad is False'):
        model(image(160, 160))


def test_features_only_and_intermediates():
    model = create_tiny('biformer_tiny', features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32] and model.feature_info.channels() == [32, 64, 96, 128]
    with torch.no_grad():
        feats = model(image(96, 112))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 24, 28), (1, 64, 12, 14), (1, 96, 6, 7), (1, 128, 3, 4)]
    pruned = create_tiny('biformer_tiny', features_only=True, out_indices=(0, 1))
    assert len(pruned.model.stages) == 2
    full = create_tiny('biformer_tiny').eval()
    x = image(96, 96)
    with torch.no_grad():
        final, inter = full.forward_intermediates(x)
        torch.testing.assert_close(final, full.forward_features(x))
        nhwc = full.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
        torch.testing.assert_close(nhwc[0].permute(0, 3, 1, 2), inter[0])
        normed = full.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final)
    assert full.prune_intermediate_layers([0, 1]) == [0, 1] and full.num_classes == 0
    with torch.no_grad():
        after = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(inter[:2], after):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='output_fmt'):
        full.forward_intermediates(x, output_fmt='NLC')


def test_classifier_pooling_and_in_chans():
    model = create_tiny('biformer_tiny').eval()
    x = image(64, 64, batch=2)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, 128)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(7, 'max')
        assert model(x).shape == (2, 7) and model.global_pool == 'max'
        model.reset_classifier(0, '')
        assert model(x).shape == (2, 128, 2, 2)
    gray = create_tiny('biformer_stl', in_chans=1, num_classes=4).eval()
    with torch.no_grad():
        assert gray(image(64, 64, chans=1)).shape == (1, 4)
    with pytest.raises(ValueError, match=r'expected an image batch of shape \[B, in_chans=1, H, W\]'):
        gray(image(64, 64))


@pytest.mark.parametrize('name', sorted(TINY))
def test_backward_reaches_every_parameter_and_grad_checkpointing(name):
    model = create_tiny(name, num_classes=10, drop_path_rate=0.1).train()
    model.set_grad_checkpointing()
    model(image(112, 128, batch=2)).logsumexp(-1).mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_group_matcher_device_and_dtype():
    model = create_tiny('biformer_tiny')
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters())) and len(groups) >= 3
    meta = create_tiny('biformer_tiny', device='meta')
    assert all(p.device.type == 'meta' for p in meta.parameters())
    double = create_tiny('biformer_stl_nchw', dtype=torch.float64).eval()
    with torch.no_grad():
        assert double(image(112, 112).double()).dtype == torch.float64


@pytest.mark.parametrize('kwargs, match', [
    (dict(topks=(1, 4, 16)), r'topks: expected one value per stage \(4 stages'),
    (dict(topks=(1, 4, 50, -2)), r'topks\[2\]=50 must be <= num_regions\*\*2 = 49'),
    (dict(head_dim=40), r'embed_dims\[0\]=32 must be divisible by head_dim=40'),
    (dict(stem_type='overlap'), r"stem_type: expected one of \('conv', 'patch'\)"),
    (dict(attn_layout='nhwc'), r"attn_layout: expected one of \('legacy', 'nchw'\)"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BiFormer(**{**TINY_ARGS, **kwargs}, device='meta')


def test_nchw_layout_equals_legacy_on_divisible_maps_and_differs_when_padded():
    torch.manual_seed(0)
    legacy = BiLevelRoutingAttention(64, 2, 7, 4).double()
    nchw = BiLevelRoutingAttention(64, 2, 7, 4, attn_layout='nchw').double()
    nchw.load_state_dict(legacy.state_dict())
    x = torch.randn(2, 28, 28, 64, dtype=torch.float64)
    torch.testing.assert_close(nchw(x), legacy(x))
    y = torch.randn(2, 30, 33, 64, dtype=torch.float64)  # nchw: 4x4 regions -> 8x9 grid (72 regions)
    assert nchw(y).shape == legacy(y).shape == y.shape
    assert not torch.allclose(nchw(y), legacy(y))


# ------------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('wrapper', [None, 'model', 'state_dict'])
def test_checkpoint_filter_round_trip(name, wrapper):
    model = create_tiny(name)
    ours = model.state_dict()
    official = to_official(ours, model)
    converted = checkpoint_filter_fn(official if wrapper is None else {wrapper: official, 'epoch': 3}, model)
    assert converted.keys() == ours.keys()
    for key in ours:
        torch.testing.assert_close(converted[key], ours[key], rtol=0, atol=0)
    assert checkpoint_filter_fn(ours, model).keys() == ours.keys()


def test_checkpoint_filter_lists_unmapped_keys():
    model = create_tiny('biformer_tiny', device='meta')
    official = to_official(model.state_dict(), model)
    official['extra_norms.0.weight'] = torch.zeros(32)  # a detection/segmentation backbone
    with pytest.raises(ValueError, match=r"1 key\(s\) do not map onto BiFormer.*extra_norms\.0\.weight"):
        checkpoint_filter_fn(official, model)
    with pytest.raises(ValueError, match='do not map'):  # an STL checkpoint into a BiFormer
        checkpoint_filter_fn(to_official(create_tiny('biformer_stl').state_dict(), create_tiny('biformer_stl')), model)


def test_pretrained_file_in_official_release_format(tmp_path):
    """``pretrained_cfg_overlay=dict(file=...)`` with a DeiT-style release dict (argparse Namespace included)."""
    source = create_tiny('biformer_stl_nchw').eval()
    path = tmp_path / 'biformer_stl_nchw_best.pth'
    torch.save({'model': to_official(source.state_dict(), source), 'epoch': 299,
                'args': argparse.Namespace(model='biformer_stl_nchw')}, path)
    loaded = create_tiny('biformer_stl_nchw', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = image(112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', FIXTURES)
def test_parity_with_official(parity_dir, case, dtype):
    fixture = load_fixture(parity_dir, case)
    model = fixture_model(fixture).to(dtype)
    atol = fixture['atol_suggested'] if dtype == torch.float64 else fixture['atol_suggested_float32']
    for x, expected, expected_feats in zip(fixture['inputs'], fixture['outputs'], fixture['features']):
        for backend in ('torch', 'reference'):
            with torch.no_grad(), ops.use_backend(backend):
                final, feats = model.forward_intermediates(x.to(dtype))
                out = model.forward_head(final)
            err = (out.double() - expected).abs().max().item()
            assert err <= atol, f'{case} {backend} {tuple(x.shape)} {dtype}: output err {err:.2e} > {atol}'
            for i, (f, ef) in enumerate(zip(feats, expected_feats or [])):
                ferr = (f.double() - ef).abs().max().item()
                assert ferr <= atol, f'{case} {tuple(x.shape)} stage {i}: feature err {ferr:.2e} > {atol}'


def test_features_only_pretrained_matches_official_features(parity_dir, tmp_path):
    """The det/seg path: the padded (n_win=8) fixture through timm's features_only + pretrained file loading."""
    fixture = load_fixture(parity_dir, 'biformer_reduced_autopad')
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': fixture['state_dict']}, path)
    model = timm.create_model('biformer_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              features_only=True, num_regions=8, **TINY_ARGS).eval()
    with torch.no_grad():
        feats = model(fixture['inputs'][1])
    for f, expected in zip(feats, fixture['features'][1]):
        assert (f - expected).abs().max().item() <= fixture['atol_suggested_float32']
