"""L²ViT: registry, size, timm contract, checkpoint conversion and parity with the official code.

Most tests use a narrow, shallow stand-in (same classes and code paths); full-size variants are built on the
``meta`` device (params) or for the MAC counts.
"""
import re

import pytest
import timm
import torch
import torch.nn as nn

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.models.l2vit import L2ViT, checkpoint_filter_fn, model_args_from_official
from attnzoo.utils import count_macs, count_params

# name: (official-code params M [README rounds to 29/50/89], official-code GMACs (issue), README GMACs)
README = {
    'l2vit_tiny': (28.597, 4.69, 4.7),
    'l2vit_small': (50.199, 8.98, 9.0),
    'l2vit_base': (88.577, 15.8, 15.9),
    'l2vit_base_384': (88.577, 47.3, 47.5),
}
TINY = dict(dims=(32, 64, 96, 128), depths=(2, 2, 2, 1), num_heads=(1, 2, 3, 4))


def create_tiny(**kwargs) -> L2ViT:
    return timm.create_model('l2vit_tiny', **{**TINY, **kwargs})


def image(*size, batch=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def to_official(state_dict):
    """Our keys -> the official keys (inverse of checkpoint_filter_fn)."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r'^stem\.proj\.', 'downsample_layers.0.proj.proj.', key)
        key = re.sub(r'^stem\.norm\.', 'downsample_layers.0.norm.', key)
        key = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', key)
        key = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', key)
        out[key.replace('head.fc.', 'head.')] = value
    return out


def test_registry_and_cfgs():
    assert set(timm.list_models(module='l2vit')) == set(README)
    tags = set(timm.list_pretrained('l2vit*'))
    assert {'l2vit_tiny.in1k', 'l2vit_small.in1k', 'l2vit_base.in1k', 'l2vit_base.in22k_ft_in1k', 'l2vit_base.in22k',
            'l2vit_base_384.in22k_ft_in1k'} == tags
    for name in README:
        model = timm.create_model(name, device='meta')
        cfg = model.pretrained_cfg
        assert cfg['url'].startswith('https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/')
        assert cfg['license'] == 'mit' and cfg['paper_ids'] == 'arXiv:2501.16182'
        size = cfg['input_size'][-1]
        assert cfg['pool_size'] == (size // 32, size // 32) and cfg['crop_pct'] == (1.0 if size == 384 else 0.875)
        assert isinstance(model.get_submodule(cfg['first_conv']), nn.Conv2d)
        assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert timm.create_model('l2vit_base.in22k', device='meta').num_classes == 21841
    assert timm.create_model('l2vit_base_384', device='meta').stages[0].blocks[0].attn.window_size == (12, 12)


def test_block_layout():
    model = timm.create_model('l2vit_small', device='meta')
    kinds = [[type(b).__name__ for b in s.blocks] for s in model.stages]
    assert kinds[2] == ['LWABlock', 'LGABlock'] * 9 and all(k[0] == 'LWABlock' and k[-1] == 'LGABlock' for k in kinds)
    lwa, lga = model.stages[0].blocks
    assert len(lwa.cpe) == 2 and len(lga.cpe) == 1 and isinstance(lga.local_mp.bn, nn.BatchNorm2d)
    assert lwa.attn.shift_size == (0, 0) and lga.attn.clamp_min == 100.0


@pytest.mark.parametrize('name', sorted(README))
def test_params_match_official(name):
    params = count_params(timm.create_model(name, device='meta')) / 1e6
    assert abs(params - README[name][0]) < 0.001, f'{name}: {params:.3f}M'


@pytest.mark.parametrize('name', [n if n == 'l2vit_tiny' else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(README)])
def test_macs_match_readme(name):
    model = timm.create_model(name).eval()
    gmacs = count_macs(model, model.pretrained_cfg['input_size']) / 1e9
    for reference in README[name][1:]:
        assert abs(gmacs - reference) <= 0.01 * reference, f'{name}: {gmacs:.3f} GMACs vs {reference}'


@pytest.mark.parametrize('size', [(224, 224), (32, 32), (97, 131), (198, 262)])
def test_forward_any_size(size):
    model = create_tiny(num_classes=5).eval()
    with torch.no_grad():
        feats = model.forward_features(image(*size))
        out = model.forward_head(feats)
    expected = tuple(-(-s // 32) for s in size)
    assert feats.shape == (1, *expected, 128) and out.shape == (1, 5) and torch.isfinite(out).all()


def test_features_intermediates_and_prune():
    x = image(96, 112)
    getter = create_tiny(features_only=True).eval()
    listnet = create_tiny(features_only=True, feature_cls='list').eval()
    listnet.load_state_dict(getter.state_dict(), strict=False)
    assert getter.feature_info.reduction() == [4, 8, 16, 32] and getter.feature_info.channels() == [32, 64, 96, 128]
    with torch.no_grad():
        a, b = getter(x), listnet(x)
    assert [tuple(f.shape) for f in a] == [(1, 32, 24, 28), (1, 64, 12, 14), (1, 96, 6, 7), (1, 128, 3, 4)]
    assert listnet.output_fmt == 'NHWC' and b[0].shape == (1, 24, 28, 32)
    assert len(create_tiny(features_only=True, out_indices=(0, 1)).model.stages) == 2
    model = create_tiny().eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        early = model.forward_intermediates(x, indices=[0, -2], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[1], inter[-2])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final.permute(0, 3, 1, 2))
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert model.num_features == 64 and len(model.stages) == 2
    model.train()
    sum(f.sum() for f in model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_classifier_pooling_and_training_contract():
    model = create_tiny()
    x = image(64, 64, batch=2)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters()), 'unused parameters in train mode'
    model.eval()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, '')
        assert model(x).shape == (2, 2, 2, 128)
        model.reset_classifier(7, 'max')
        assert model(x).shape == (2, 7)
    assert len(timm.models.group_parameters(model, model.group_matcher())) > 2
    assert model.no_weight_decay() == set()


def test_device_dtype_and_arguments():
    meta = create_tiny(device='meta')
    assert all(t.device.type == 'meta' for t in list(meta.parameters()) + list(meta.buffers()))
    double = create_tiny(dtype=torch.float64).eval()
    with torch.no_grad():
        assert double(image(64, 64).double()).dtype == torch.float64
    with pytest.raises(TypeError):
        timm.create_model('l2vit_tiny', not_a_model_arg=1, device='meta')
    with pytest.raises(ValueError, match=r'num_heads: expected one value per stage'):
        L2ViT(dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 3), device='meta')
    with pytest.raises(ValueError, match=r'dims\[1\]=64 must be divisible by num_heads\[1\]=3'):
        L2ViT(dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 3, 3, 4), device='meta')
    with pytest.raises(ValueError, match=r'expected an image batch'):
        create_tiny()(torch.randn(1, 4, 32, 32))


def test_checkpoint_filter():
    model = create_tiny()
    ours = model.state_dict()
    official = to_official(ours)
    assert 'downsample_layers.0.proj.proj.1.running_var' in official and 'stages.0.1.local_mp.conv1.weight' in official
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in official.items()}
    release = {'model': official, 'model_ema': ema, 'epoch': 'best-ema', 'optimizer': {}}
    converted = checkpoint_filter_fn(release, model)
    assert converted.keys() == ours.keys() and converted['head.fc.weight'] is official['head.weight']
    assert checkpoint_filter_fn(release, model, use_ema=True)['head.fc.weight'] is ema['head.weight']
    assert checkpoint_filter_fn({'module.' + k: v for k, v in official.items()}, model).keys() == ours.keys()
    assert checkpoint_filter_fn(ours, model).keys() == ours.keys()
    with pytest.raises(ValueError, match="use_ema=True but the checkpoint has no 'model_ema'"):
        checkpoint_filter_fn({'model': official}, model, use_ema=True)
    with pytest.raises(ValueError, match=r"1 key\(s\) do not map onto L2ViT.*'norm0.weight'"):
        checkpoint_filter_fn({**official, 'norm0.weight': torch.zeros(32)}, model)
    headless = create_tiny(num_classes=0)
    result = create_tiny().load_state_dict(checkpoint_filter_fn(headless.state_dict(), model), strict=False)
    assert sorted(result.missing_keys) == ['head.fc.bias', 'head.fc.weight'] and not result.unexpected_keys


def load_fixture(parity_dir):
    return torch.load(parity_dir / 'l2vit_reduced.pt', weights_only=False)


def test_parity_with_official(parity_dir):
    fixture = load_fixture(parity_dir)
    model = L2ViT(**model_args_from_official(fixture['official_kwargs']))
    model.load_state_dict(checkpoint_filter_fn({'model': fixture['state_dict']}, model), strict=True)
    model.eval()
    atol = fixture['atol_suggested_float32']
    for x, expected, expected_feats in zip(fixture['inputs'], fixture['outputs'], fixture['features']):
        with torch.no_grad():
            final, feats = model.forward_intermediates(x)
            out = model.forward_head(final)
        err = (out - expected).abs().max().item()
        assert err <= atol, f'{tuple(x.shape)}: output max abs err {err:.2e}'
        for i, (f, ef) in enumerate(zip(feats, expected_feats or [])):
            assert (f - ef).abs().max().item() <= atol, f'stage {i}'


def test_pretrained_overlay_with_release_format(parity_dir, tmp_path):
    """create_model(pretrained=True) on an official-format release file ('model' + 'model_ema'), with a new head."""
    fixture = load_fixture(parity_dir)
    path = tmp_path / 'L2ViT-reduced-checkpoint-best-ema.pth'
    torch.save({'model': fixture['state_dict'], 'model_ema': fixture['state_dict'], 'epoch': 'best-ema'}, path)
    kwargs = model_args_from_official(fixture['official_kwargs'])
    model = timm.create_model('l2vit_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **kwargs).eval()
    with torch.no_grad():
        assert (model(fixture['inputs'][1]) - fixture['outputs'][1]).abs().max().item() <= 1e-4
    kwargs['num_classes'] = 10
    assert timm.create_model('l2vit_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **kwargs).num_classes == 10


def test_fx_feature_extraction_matches_eager():
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor
    model = create_tiny().eval()
    x = image(64, 80)
    fx = create_feature_extractor(model, return_nodes=['head'], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    with torch.no_grad():
        torch.testing.assert_close(fx(x)['head'], model(x))
