"""Bad argument types and values across the ops are named TypeErrors/ValueErrors (shared checks in ops/_checks.py):
an rpb of an int dtype or a list, a list instead of a tensor, head_dim 0, a non-numeric scale or dropout, mixed
dtypes, zero keys for factorized attention, a window larger than the map."""
import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops.sparse import topk_attention

MAP = torch.randn(1, 9, 9, 2, 8)
TOK = torch.randn(1, 2, 10, 8)
MASK = torch.ones(1, 2, 10, 10, dtype=torch.bool)
ZERO_DIM_MAP = torch.randn(1, 9, 9, 2, 0)
ZERO_DIM_TOK = torch.randn(1, 2, 10, 0)

CASES = [
    (TypeError, r'na2d: rpb must be a floating-point tensor, got torch.int64',
     lambda: ops.na2d(MAP, MAP, MAP, 3, rpb=torch.zeros(2, 5, 5, dtype=torch.long))),
    (TypeError, r'na2d: rpb must be a torch.Tensor, got list', lambda: ops.na2d(MAP, MAP, MAP, 3, rpb=[[0.0]])),
    (TypeError, r'na2d: k must be a torch.Tensor, got list', lambda: ops.na2d(MAP, MAP.tolist(), MAP, 3)),
    (ValueError, r'na2d: head_dim .* must be >= 1', lambda: ops.na2d(ZERO_DIM_MAP, ZERO_DIM_MAP, ZERO_DIM_MAP, 3)),
    (TypeError, r"na2d: scale must be a real number or None, got 'a'", lambda: ops.na2d(MAP, MAP, MAP, 3, scale='a')),
    (TypeError, r"na1d: dropout_p must be a real number", lambda: ops.na1d(MAP[0], MAP[0], MAP[0], 3, dropout_p='a')),
    (ValueError, r'window_attention: head_dim .* must be >= 1',
     lambda: ops.window_attention(ZERO_DIM_MAP, ZERO_DIM_MAP, ZERO_DIM_MAP, 3)),
    (TypeError, r'window_attention: scale must be a real number',
     lambda: ops.window_attention(MAP, MAP, MAP, 3, scale=[1.0])),
    (ValueError, r'window_attention: window_size must be in \[1, H=9\] x \[1, W=9\].*got 10001',
     lambda: ops.window_attention(MAP, MAP, MAP, 10001)),
    (ValueError, r'window_attention: window_size must be in \[1, H=9\] x \[1, W=9\].*got \(3, 10\)',
     lambda: ops.window_attention(MAP, MAP, MAP, (3, 10))),
    (ValueError, r'routing_attention: head_dim .* must be >= 1',
     lambda: ops.routing_attention(*(ZERO_DIM_MAP[:, :8, :8],) * 3, 2, 2)),
    (TypeError, r'routing_attention: scale must be a real number',
     lambda: ops.routing_attention(*(MAP[:, :8, :8],) * 3, 2, 2, scale='a')),
    (TypeError, r'routing_attention: routing_scale must be a real number',
     lambda: ops.routing_attention(*(MAP[:, :8, :8],) * 3, 2, 2, routing_scale='a')),
    (TypeError, r'region_routing: scale must be a real number',
     lambda: ops.region_routing(MAP[:, :8, :8], MAP[:, :8, :8], 2, 2, scale='a')),
    (ValueError, r'linear_attention: head_dim .* must be >= 1',
     lambda: ops.linear_attention(ZERO_DIM_TOK, ZERO_DIM_TOK, ZERO_DIM_TOK)),
    (TypeError, r"linear_attention: temperature must be a real number, got 'a'",
     lambda: ops.linear_attention(TOK, TOK, TOK, temperature='a')),
    (TypeError, r"linear_attention: clamp_min must be a real number, got None",
     lambda: ops.linear_attention(TOK, TOK, TOK, clamp_min=None)),
    (ValueError, r'factorized_attention: head_dim .* must be >= 1',
     lambda: ops.factorized_attention(ZERO_DIM_TOK, ZERO_DIM_TOK, ZERO_DIM_TOK)),
    (TypeError, r'factorized_attention: scale must be a real number',
     lambda: ops.factorized_attention(TOK, TOK, TOK, scale='a')),
    (TypeError, r'factorized_attention: q, k, v must share one dtype',
     lambda: ops.factorized_attention(TOK, TOK.double(), TOK.double())),
    (ValueError, r'factorized_attention: k must hold at least one key \(M >= 1\)',
     lambda: ops.factorized_attention(TOK, TOK[:, :, :0], TOK[:, :, :0])),
    (ValueError, r'topk_attention: head_dim .* must be >= 1',
     lambda: topk_attention(ZERO_DIM_TOK, ZERO_DIM_TOK, ZERO_DIM_TOK, mask=MASK)),
    (TypeError, r'topk_attention: scale must be a real number', lambda: topk_attention(TOK, TOK, TOK, mask=MASK,
                                                                                          scale='a')),
    (TypeError, r'topk_attention: dropout_p must be a real number', lambda: topk_attention(TOK, TOK, TOK, mask=MASK,
                                                                                              dropout_p=None)),
]


@pytest.mark.parametrize('error,match,call', CASES, ids=[c[1][:40] for c in CASES])
def test_named_error(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_factorized_mixed_devices():
    with pytest.raises(ValueError, match='factorized_attention: q, k, v must be on one device'):
        ops.factorized_attention(TOK, TOK.to('meta'), TOK.to('meta'))


def test_window_as_large_as_the_map_runs():
    assert ops.window_attention(MAP, MAP, MAP, 9).shape == MAP.shape
