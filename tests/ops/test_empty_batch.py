"""A batch of 0 gives an empty output, forward and backward, on every op and every CPU path."""
import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops.sparse import topk_attention

BACKENDS = ['reference', 'torch', 'auto']


def _empty(*shape):
    return torch.randn(0, *shape, requires_grad=True)


def _qkv(*shape):
    return tuple(_empty(*shape) for _ in range(3))


CASES = {
    'na1d': (lambda q, k, v: ops.na1d(q, k, v, 3), lambda: _qkv(9, 2, 8)),
    'na1d_causal_dilated': (lambda q, k, v: ops.na1d(q, k, v, 3, dilation=2, is_causal=True), lambda: _qkv(9, 2, 8)),
    'na2d': (lambda q, k, v: ops.na2d(q, k, v, 3), lambda: _qkv(9, 7, 2, 8)),
    'na2d_rpb_dilated': (lambda q, k, v: ops.na2d(q, k, v, 3, dilation=(2, 1), rpb=torch.zeros(2, 5, 5)),
                         lambda: _qkv(9, 7, 2, 8)),
    'na2d_full_map': (lambda q, k, v: ops.na2d(q, k, v, 3), lambda: _qkv(3, 3, 2, 8)),
    'na3d': (lambda q, k, v: ops.na3d(q, k, v, 3), lambda: _qkv(5, 4, 3, 2, 8)),
    'window': (lambda q, k, v: ops.window_attention(q, k, v, 7), lambda: _qkv(14, 10, 2, 8)),
    'window_shifted': (lambda q, k, v: ops.window_attention(q, k, v, 7, 3), lambda: _qkv(14, 14, 2, 8)),
    'topk_mask': (lambda q, k, v: topk_attention(q, k, v, mask=torch.ones(0, 2, 10, 10, dtype=torch.bool)),
                  lambda: _qkv(2, 10, 8)),
    'topk_mask_dense_row': (lambda q, k, v: topk_attention(q, k, v, mask=torch.ones(0, 2, 10, 10, dtype=torch.bool),
                                                           dense_rows=1), lambda: _qkv(2, 10, 8)),
    'topk_indices': (lambda q, k, v: topk_attention(q, k, v, indices=torch.zeros(0, 2, 9, 3, dtype=torch.long),
                                                    dense_rows=1), lambda: _qkv(2, 10, 8)),
    'routing': (lambda q, k, v: ops.routing_attention(q, k, v, 2, 2), lambda: _qkv(8, 8, 2, 8)),
    'linear': (lambda q, k, v: ops.linear_attention(q, k, v), lambda: _qkv(2, 10, 8)),
    'factorized': (lambda q, k, v: ops.factorized_attention(q, k, v), lambda: (_empty(2, 10, 8), _empty(2, 4, 8),
                                                                                 _empty(2, 4, 8))),
    'dynamic_dwconv2d': (lambda x, w: ops.dynamic_dwconv2d(x, w, 3), lambda: (_empty(4, 8, 8), _empty(2, 3, 3, 8, 8))),
}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', sorted(CASES))
def test_empty_batch_forward_backward(case, backend):
    fn, make = CASES[case]
    inputs = make()
    with ops.use_backend(backend):
        out = fn(*inputs)
    assert out.shape[0] == 0 and out.numel() == 0
    grads = torch.autograd.grad(out.sum(), inputs)
    assert [g.shape for g in grads] == [t.shape for t in inputs]


@pytest.mark.skipif(not ops.natten_available(), reason='needs NATTEN')
def test_empty_batch_natten_forward():
    q, k, v = (t.detach() for t in _qkv(9, 7, 2, 8))
    with ops.use_backend('natten'):
        assert ops.na2d(q, k, v, 3).shape == (0, 9, 7, 2, 8)
