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


def test_dlgsanet_empty_batch_forward():
    # Forward only: PyTorch's PixelShuffle backward rejects an empty batch (its gradient has the wrong shape).
    model = timm.create_model('dlgsanet_tiny_x2').eval()
    with torch.no_grad():
        assert model(torch.randn(0, 3, 24, 24)).shape == (0, 3, 48, 48)
