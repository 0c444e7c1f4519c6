"""The measured ``auto`` choices of Sparsifiner's ops on CUDA (``attnzoo/ops/connectivity.py`` docstring: the fused
predictor and the bitmask attention kernels were faster on the H200), checked on CPU tensors with the kernels made
available, so no GPU is needed; and that the CPU keeps the unfused ops."""
import torch

import attnzoo.ops.connectivity as C
from attnzoo.ops import use_backend


def kernels_available(monkeypatch):
    monkeypatch.setattr(C, 'triton_available', lambda: True)
    monkeypatch.setattr(C, '_triton_interpreted', lambda: True)  # the kernels' device check passes on the CPU


def test_auto_attention_on_cuda_is_the_kernels_where_they_apply(monkeypatch):
    kernels_available(monkeypatch)
    q = torch.zeros(2, 6, 197, 64)
    assert C._auto_cuda_attention_backend(q, q, 0.0) == 'triton'
    assert C._auto_cuda_attention_backend(q.requires_grad_(), q, 0.0) == 'triton'  # training too
    assert C._auto_cuda_attention_backend(q, q, 0.1) == 'torch'  # dropout: the kernels have none
    odd = torch.zeros(2, 6, 197, 48)
    assert C._auto_cuda_attention_backend(odd, odd, 0.0) == 'torch'  # head_dim 48: not one of the kernels'
    assert C._auto_cuda_attention_backend(q.double(), q.double(), 0.0) == 'torch'
    with use_backend('auto'):
        assert C._select_attention_backend(q, q, 0.0, 'connectivity_attention') == 'torch'  # CPU tensors
    with use_backend('reference'):
        assert C._select_attention_backend(q, q, 0.0, 'connectivity_attention') == 'reference'
    monkeypatch.setattr(C, 'triton_available', lambda: False)
    assert C._auto_cuda_attention_backend(q, q, 0.0) == 'torch'


def test_auto_predictor_on_cuda_is_the_fused_kernel(monkeypatch):
    kernels_available(monkeypatch)
    q_c = torch.zeros(2, 6, 196, 32)
    assert C._select_predictor_backend(q_c, 'topk_connectivity') == 'torch'  # CPU tensors
    if torch.cuda.is_available():
        assert C._select_predictor_backend(q_c.cuda(), 'topk_connectivity') == 'triton'
    with use_backend('triton'):
        assert C._select_predictor_backend(q_c, 'topk_connectivity') == 'triton'


def test_sparsifiner_layers_follow_the_ops_auto_by_default():
    import timm
    import attnzoo  # noqa: F401
    model = timm.create_model('sparsifiner_deit_tiny', depth=2, keep_rate=0.25)
    assert all(blk.attn.backends == {'predictor': 'auto', 'attention': 'auto'} for blk in model.blocks)
