"""FaViT on CUDA against the same weights on the CPU, whose output the parity fixture checks (test_favit.py):
output and input gradient in fp32, output under bf16 autocast. FaSA's local groups run as one SDPA call over
strided queries there, which CUDA picks its own kernels for. Skipped without a GPU."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize('name', ['favit_b0', 'favit_b2'])
def test_cuda_matches_cpu(name, no_tf32):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()  # eval: no stochastic depth, so both devices compute the same function
    x = torch.randn(2, 3, 224, 224)
    grads, outs = [], []
    for device in ('cpu', 'cuda'):
        model.to(device)
        xd = x.to(device).detach().requires_grad_()
        out = model(xd)
        out.sum().backward()
        outs.append(out.detach().cpu())
        grads.append(xd.grad.cpu())
    assert rel(outs[1], outs[0]) < 1e-4
    assert rel(grads[1], grads[0]) < 1e-4
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        half = model(x.cuda()).cpu()
    assert rel(half, outs[0]) < 3e-2
