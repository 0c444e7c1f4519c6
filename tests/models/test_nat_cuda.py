"""NAT/DiNAT on CUDA through the automatic backend choice (the fused Triton kernels) and the tiled SDPA path,
against the reference. Skipped without a GPU."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401
import attnzoo.ops as ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.mark.parametrize('name', ['dinat_mini', 'nat_mini', 'dinat_s_tiny'])
@pytest.mark.parametrize('backend', ['auto', 'torch', 'triton'])
def test_cuda_forward_and_backward_match_reference(name, backend):
    torch.manual_seed(0)
    model = timm.create_model(name).cuda()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    outs = {}
    for run in ('reference', backend):
        model.zero_grad()
        with ops.use_backend(run):
            out = model(x)
        out.float().square().mean().backward()
        rpb = model.stages[0].blocks[1].attn.rpb.grad.clone()
        outs[run] = (out.detach(), rpb)
    for got, ref in zip(outs[backend], outs['reference']):
        assert ((got - ref).norm() / ref.norm()).item() < 1e-3


def test_cuda_bf16_autocast_inference():
    model = timm.create_model('dinat_tiny').cuda().eval()
    x = torch.randn(4, 3, 224, 224, device='cuda')
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref).norm() / ref.norm()).item() < 3e-2
