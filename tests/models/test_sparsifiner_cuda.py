"""Sparsifiner on CUDA (fused Triton predictor; masked SDPA or the bitmask attention kernels) against the
``reference`` backend on the same GPU (the unfused predictor and dense masked attention): fp32 output within
1e-4 and input gradient within 1e-3 (relative), phase 2 (sparse, train mode) and phase 1 (dense attention
plus the reconstruction maps); and the GPU against the CPU on the same weights. Skipped without a GPU."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401
from attnzoo.ops import use_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture
def no_tf32():
    """fp32 matmuls and convolutions in full precision on CUDA, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run(model, x, backend):
    """(output, input gradient, phase-1 maps) of ``model`` on ``x`` under ``backend``."""
    x = x.detach().requires_grad_()
    with use_backend(backend):
        out = model(x)
    out.float().square().mean().backward()
    maps = [a.detach() for a in model.approx_attn_maps() if a is not None]
    return out.detach(), x.grad, maps


@pytest.mark.parametrize('name', ['sparsifiner_deit_small', 'sparsifiner_lvvit_small'])
@pytest.mark.parametrize('phase', ['finetune', 'recon'])
@pytest.mark.parametrize('attention', ['auto', 'triton'])
def test_cuda_model_matches_reference(name, phase, attention, no_tf32):
    torch.manual_seed(0)
    model = timm.create_model(name, keep_rate=0.25, drop_path_rate=0.).cuda().train()
    model.set_recon_mode(phase == 'recon')
    model.set_backends(predictor='triton', attention=attention)
    x = torch.randn(2, 3, 224, 224, device='cuda')
    out, grad, maps = run(model, x, 'auto')
    ref, ref_grad, ref_maps = run(model, x, 'reference')
    assert rel(out, ref) <= 1e-4
    assert rel(grad, ref_grad) <= 1e-3
    assert len(maps) == (len(model.blocks) if phase == 'recon' else 0)
    for a, b in zip(maps, ref_maps):
        assert rel(a, b) <= 1e-4


@pytest.mark.parametrize('name', ['sparsifiner_deit_tiny', 'sparsifiner_lvvit_small'])
def test_cuda_matches_cpu(name, no_tf32):
    """The issue's measurement (before the tie rule: 1e-4 for deit_tiny, 5e-3 for lvvit_small, input gradient
    0.3): same weights, eval mode, CPU (indices + gather) against CUDA (fused predictor + masked SDPA)."""
    torch.manual_seed(0)
    model = timm.create_model(name, keep_rate=0.25).eval()
    x = torch.randn(2, 3, 224, 224)
    outs, grads = [], []
    for device in ('cpu', 'cuda'):
        model.to(device)
        xd = x.to(device).requires_grad_()
        out = model(xd)
        out.sum().backward()
        outs.append(out.detach().cpu())
        grads.append(xd.grad.cpu())
    assert rel(outs[1], outs[0]) <= 1e-4
    assert rel(grads[1], grads[0]) <= 1e-3
