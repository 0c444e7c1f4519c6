"""Every model maps a batch of 0 images to an empty output, forward and backward (train mode: dropout, drop path)."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401  (registers the models)

MODELS = ['nat_mini', 'dinat_mini', 'dinat_isotropic_small', 'favit_b0', 'l2vit_tiny', 'biformer_tiny',
          'biformer_stl_nchw', 'sparsifiner_deit_tiny']


@pytest.mark.parametrize('name', MODELS)
def test_classifier_empty_batch(name):
    model = timm.create_model(name, num_classes=10, drop_path_rate=0.1).train()
    x = torch.randn(0, 3, 224, 224, requires_grad=True)
    out = model(x)
    assert out.shape == (0, 10)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape


def test_dlgsanet_empty_batch():
    """Forward and backward (PyTorch's own PixelShuffle backward rejects an empty batch)."""
    model = timm.create_model('dlgsanet_tiny_x2').train()
    x = torch.randn(0, 3, 24, 24, requires_grad=True)
    out = model(x)
    assert out.shape == (0, 3, 48, 48)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape


@pytest.mark.parametrize('scale', [2, 3])
def test_dlgsanet_pixel_shuffle_is_torchs(scale):
    from attnzoo.models.dlgsanet import PixelShuffle
    x = torch.randn(2, 5 * scale * scale, 7, 6)
    assert torch.equal(PixelShuffle(scale)(x), torch.nn.functional.pixel_shuffle(x, scale))
