"""FaViT: registry, size, timm contract, minimum input size, checkpoint conversion and parity with the official code.

Most tests use a narrow, shallow stand-in (same classes and code paths: every stage, both local groups, the global
group); full-size variants are built on the ``meta`` device (params) or for the MAC counts.
"""
import re

import pytest
import timm
import torch
import torch.nn as nn

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.models.favit import FaViT, checkpoint_filter_fn, favit_min_input_size, model_args_from_official
from attnzoo.utils import count_macs, count_params

# name: (official-code params M, official-code GMACs (issue), README params M, README GFLOPs(=MACs))
README = {
    'favit_b0': (3.428, 0.632, 3.4, 0.6),
    'favit_b1': (12.959, 2.344, 13, 2.4),
    'favit_b2': (24.920, 4.458, 24, 4.5),
    'favit_b3': (48.746, 8.512, 48, 8.5),
}
TINY = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1))


def create_tiny(**kwargs) -> FaViT:
    return timm.create_model('favit_b0', **{**TINY, **kwargs})


def image(*size, batch=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def to_official(state_dict):
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r'^stem\.', 'patch_embed1.', key)
        key = re.sub(r'^stages\.(\d+)\.downsample\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.', key)
        key = re.sub(r'^stages\.(\d+)\.blocks\.', lambda m: f'block{int(m.group(1)) + 1}.', key)
        key = re.sub(r'^stages\.(\d+)\.norm\.', lambda m: f'norm{int(m.group(1)) + 1}.', key)
        out[key.replace('head.fc.', 'head.')] = value
    return out


def test_registry_and_cfgs():
    assert set(timm.list_models(module='favit')) == set(README)
    assert not timm.list_pretrained('favit*')  # no weights were released
    assert all(timm.models.get_pretrained_cfg(f'{n}.untrained') is not None for n in README)
    for name in README:
        model = timm.create_model(name, device='meta')
        cfg = model.pretrained_cfg
        assert cfg['url'] == '' and not cfg.get('hf_hub_id') and 'No official weights' in cfg['notes']
        assert cfg['min_input_size'] == (3, 97, 97) and cfg['pool_size'] == (7, 7)
        assert cfg['paper_ids'] == 'arXiv:2312.08614'
        assert isinstance(model.get_submodule(cfg['first_conv']), nn.Conv2d)
        assert model.get_submodule(cfg['classifier']) is model.get_classifier()
        assert model.min_input_size == 97
    with pytest.raises(RuntimeError, match='No pretrained weights'):
        timm.create_model('favit_b0', pretrained=True)


def test_attention_groups():
    model = timm.create_model('favit_b0', device='meta')
    attn = [s.blocks[0].attn for s in model.stages]
    assert [a.group_dims for a in attn] == [[4, 14, 14], [8, 28, 28], [16, 56, 56], [32, 224]]
    assert [a.dilations for a in attn] == [[1, 8], [1, 4], [1, 2], [1]]
    assert model.stages[0].blocks[0].norm1.eps == 1e-6 and model.stem.norm.eps == 1e-5 and attn[0].norm.eps == 1e-5


@pytest.mark.parametrize('name', sorted(README))
def test_params_match_official(name):
    params = count_params(timm.create_model(name, device='meta')) / 1e6
    official, _, readme, _ = README[name]
    assert abs(params - official) < 0.001, f'{name}: {params:.3f}M'
    assert abs(params - readme) <= 0.04 * readme  # README rounds (B2: "24", B3: "48")


@pytest.mark.parametrize('name', [n if n == 'favit_b0' else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(README)])
def test_macs_match_readme(name):
    model = timm.create_model(name).eval()
    gmacs = count_macs(model, (3, 224, 224)) / 1e9
    _, official, _, readme = README[name]
    # fvcore (what we use) also counts the norms: the official code measures 0.639/2.358/4.480/8.542 with it
    assert abs(gmacs - official) <= 0.015 * official, f'{name}: {gmacs:.3f} GMACs vs {official}'
    assert abs(gmacs - readme) <= 0.05  # README rounds to 0.1G


@pytest.mark.parametrize('size', [(97, 97), (112, 150), (240, 288)])
def test_forward_any_size_from_97(size):
    model = create_tiny(num_classes=5).eval()
    with torch.no_grad():
        feats = model.forward_features(image(*size))
        out = model.forward_head(feats)
    assert feats.shape == (1, *(-(-s // 32) for s in size), 128) and torch.isfinite(out).all()


@pytest.mark.parametrize('size', [(96, 96), (300, 96), (96, 300), (32, 32)])
def test_named_error_below_97(size):
    model = create_tiny().eval()
    with pytest.raises(ValueError, match=r'FaViT needs images of at least 97x97 px'):
        model(image(*size))


def test_min_input_size_follows_config():
    assert favit_min_input_size((8, 4, 2, 1)) == 97
    assert favit_min_input_size((1, 1, 1, 1)) == 97  # window 7 needs stage-4 maps >= 4
    assert favit_min_input_size((2, 2, 2, 1)) == 97  # stage 3 (stride 16) needs sides >= 7
    assert favit_min_input_size((16, 1, 1, 1)) == 48 * 4 + 1  # tile side 97 needs stage-1 sides >= 49


def test_features_intermediates_and_prune():
    x = image(112, 128)
    getter = create_tiny(features_only=True).eval()
    assert getter.feature_info.reduction() == [4, 8, 16, 32] and getter.feature_info.channels() == [16, 32, 64, 128]
    with torch.no_grad():
        feats = getter(x)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 28, 32), (1, 32, 14, 16), (1, 64, 7, 8), (1, 128, 4, 4)]
    listnet = create_tiny(features_only=True, feature_cls='list').eval()
    with torch.no_grad():
        assert listnet(x)[0].shape == (1, 28, 32, 16)
    model = create_tiny().eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(inter[-1], final.permute(0, 3, 1, 2))
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[1])
    assert model.prune_intermediate_layers([0, 1]) == [0, 1] and model.num_features == 32
    model.train()
    sum(f.sum() for f in model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_classifier_pooling_and_training_contract():
    model = create_tiny(num_classes=42)
    x = image(112, 112, batch=2)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters()), 'unused parameters in train mode'
    model.eval()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, '')
        assert model(x).shape == (2, 4, 4, 128)
    assert len(timm.models.group_parameters(model, model.group_matcher())) > 2


def test_device_dtype_and_arguments():
    meta = create_tiny(device='meta')
    assert all(t.device.type == 'meta' for t in list(meta.parameters()) + list(meta.buffers()))
    double = create_tiny(dtype=torch.float64).eval()
    with torch.no_grad():
        assert double(image(97, 97).double()).dtype == torch.float64
    with pytest.raises(TypeError):
        timm.create_model('favit_b0', not_a_model_arg=1, device='meta')
    with pytest.raises(ValueError, match=r'sr_ratios: expected one value per stage'):
        FaViT(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2), device='meta')


def test_checkpoint_filter():
    model = create_tiny()
    ours = model.state_dict()
    official = to_official(ours)
    assert 'patch_embed2.proj.weight' in official and 'block4.0.attn.fcs.0.weight' in official and 'norm4.bias' in official
    for wrapped in (official, {'model': official}, {'state_dict': official}):
        converted = checkpoint_filter_fn(wrapped, model)
        assert converted.keys() == ours.keys() and converted['head.fc.weight'] is official['head.weight']
    assert checkpoint_filter_fn(ours, model).keys() == ours.keys()
    with pytest.raises(ValueError, match=r"1 key\(s\) do not map onto FaViT.*block5"):
        checkpoint_filter_fn({**official, 'block5.0.norm1.weight': torch.zeros(1)}, model)


def load_fixture(parity_dir):
    return torch.load(parity_dir / 'favit_reduced.pt', weights_only=False)


def test_parity_with_official(parity_dir):
    fixture = load_fixture(parity_dir)
    model = FaViT(**model_args_from_official(fixture['official_kwargs']))
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    model.eval()
    atol = fixture['atol_suggested_float32']
    for x, expected, expected_feats in zip(fixture['inputs'], fixture['outputs'], fixture['features']):
        with torch.no_grad():
            final, feats = model.forward_intermediates(x, output_fmt='NHWC')
            out = model.forward_head(final)
        err = (out - expected).abs().max().item()
        assert err <= atol, f'{tuple(x.shape)}: output max abs err {err:.2e}'
        for i, (f, ef) in enumerate(zip(feats, expected_feats)):  # official features: tokens [B, N, C]
            assert (f.flatten(1, 2) - ef).abs().max().item() <= atol, f'stage {i}'


def test_pretrained_overlay_with_official_file(parity_dir, tmp_path):
    fixture = load_fixture(parity_dir)
    path = tmp_path / 'favit_reduced.pth'
    torch.save({'model': fixture['state_dict']}, path)  # the layout the official det/seg code loads
    kwargs = model_args_from_official(fixture['official_kwargs'])
    model = timm.create_model('favit_b0', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    with torch.no_grad():
        assert (model.eval()(fixture['inputs'][0]) - fixture['outputs'][0]).abs().max().item() <= 1e-4


def test_fx_feature_extraction_matches_eager():
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor
    model = create_tiny().eval()
    x = image(100, 112)
    fx = create_feature_extractor(model, return_nodes=['head'], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    with torch.no_grad():
        torch.testing.assert_close(fx(x)['head'], model(x))
