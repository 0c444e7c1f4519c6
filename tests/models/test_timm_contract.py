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
