"""Checks from timm's own tests/test_models.py that cut across families: building and running under a
``meta`` default-device context (timm's cfg test), and ``min_input_size`` being a size that runs."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401

CLASSIFIERS = ['nat_mini', 'dinat_s_tiny', 'nat_isotropic_small', 'biformer_tiny', 'biformer_stl_nchw',
               'l2vit_tiny', 'favit_b0', 'sparsifiner_deit_tiny', 'sparsifiner_lvvit_small']


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_build_and_forward_under_meta_device_context(name):
    with torch.device('meta'):
        model = timm.create_model(name).eval()
        size = model.pretrained_cfg['input_size']
        out = model.forward_features(torch.randn(2, *size))
    assert out.device.type == 'meta'
    assert all(t.device.type == 'meta' for t in list(model.parameters()) + list(model.buffers()))


@pytest.mark.parametrize('name', ['biformer_stl_nchw', 'favit_b0'])
def test_min_input_size_runs(name):
    model = timm.create_model(name, num_classes=3).eval()
    size = model.pretrained_cfg['min_input_size']
    with torch.no_grad():
        assert model(torch.randn(1, *size)).shape == (1, 3)


# Number of feature maps ``features_only`` selects from: stages, or blocks of the isotropic models.
NUM_FEATURES = {'nat_isotropic_small': 12, 'sparsifiner_deit_tiny': 12, 'sparsifiner_lvvit_small': 16}


@pytest.mark.parametrize('name', CLASSIFIERS)
@pytest.mark.parametrize('out_indices, error, match', [
    ((), ValueError, 'at least one feature index'),
    ((1, 1), ValueError, r'distinct feature indices in increasing order.*\(1, 1\)'),
    ((2, 0), ValueError, r'distinct feature indices in increasing order.*\(2, 0\)'),
    ((1, -1 - 10 ** 3), ValueError, r'feature index -1001 is out of range \(0 to'),
    ((1, 99), ValueError, r'feature index 99 is out of range \(0 to'),
    (0, ValueError, r'last-n \(0\) is out of range \(1 to'),
    (99, ValueError, r'last-n \(99\) is out of range \(1 to'),
    ((0.5,), TypeError, 'list / tuple of int feature indices'),
    (('a',), TypeError, 'list / tuple of int feature indices'),
    (True, TypeError, 'list / tuple of int feature indices'),
])
def test_features_only_bad_out_indices_is_a_named_error(name, out_indices, error, match):
    with pytest.raises(error, match='out_indices: .*' + match):
        timm.create_model(name, features_only=True, out_indices=out_indices)


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_features_only_negative_out_indices_count_from_the_end(name):
    num = NUM_FEATURES.get(name, 4)
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True, out_indices=[1, -1])
    assert list(model.feature_info.out_indices) == [1, num - 1]


@pytest.mark.parametrize('name', CLASSIFIERS)
@pytest.mark.parametrize('rate, error', [(-0.1, ValueError), (1.0, ValueError), (float('nan'), ValueError),
                                         ('0.1', TypeError)])
@pytest.mark.parametrize('arg', ['drop_rate', 'drop_path_rate', 'attn_drop_rate'])
def test_drop_rate_outside_0_1_is_refused_at_construction(name, arg, rate, error):
    if arg == 'attn_drop_rate' and name.startswith('biformer'):
        pytest.skip('BiFormer has no attention dropout')
    with torch.device('meta'), pytest.raises(error, match=rf'{arg}: expected a (drop probability|number) in \[0, 1\)'):
        timm.create_model(name, **{arg: rate})


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_drop_path_rate_inside_0_1_trains(name):
    model = timm.create_model(name, num_classes=2, drop_path_rate=0.5, drop_rate=0.5).train()
    size = model.pretrained_cfg['input_size']
    model(torch.randn(2, *size)).sum().backward()


@pytest.mark.parametrize('name', ['nat_isotropic_small', 'sparsifiner_deit_tiny'])
def test_default_out_indices_of_a_shallow_model_only_matter_with_features_only(name):
    with torch.device('meta'):
        assert len(timm.create_model(name, depth=2).blocks) == 2  # the default (last 3) is not used
        with pytest.raises(ValueError, match=r'out_indices: last-n \(3\) is out of range \(1 to 2\)'):
            timm.create_model(name, depth=2, features_only=True)
        assert len(timm.create_model(name, depth=2, features_only=True, out_indices=2).feature_info) == 2
