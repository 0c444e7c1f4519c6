"""Neighborhood attention: semantics, backends, autograd, errors."""
import itertools
import math
import sys

import pytest
import torch

import attnzoo.ops as ops

NA = {1: ops.na1d, 2: ops.na2d, 3: ops.na3d}


def naive_na(q, k, v, kernel, dilation, causal, rpb, scale):
    """Loop-per-query NA straight from NATTEN's definition (window start, dilation groups, RPB)."""
    n = q.dim() - 3
    B, *spatial, heads, _ = q.shape
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for pos in itertools.product(*[range(s) for s in spatial]):
        keys_per_axis, rel_per_axis = [], []
        for a in range(n):
            L, K, d, i = spatial[a], kernel[a], dilation[a], pos[a]
            g, ig = i % d, i // d
            Lg = len(range(g, L, d))
            if causal[a]:
                window = range(max(0, ig - K + 1), ig + 1)
            else:
                start = min(max(ig - K // 2, 0), Lg - K)
                window = range(start, start + K)
            keys_per_axis.append([j * d + g for j in window])
            rel_per_axis.append([j - ig + K - 1 for j in window])
        keys = list(itertools.product(*keys_per_axis))
        rels = list(itertools.product(*rel_per_axis))
        for b in range(B):
            for h in range(heads):
                qv = q[(b, *pos, h)].double()
                logits = torch.stack([(qv * k[(b, *kp, h)].double()).sum() * scale for kp in keys])
                if rpb is not None:
                    logits = logits + torch.stack([rpb[(h, *r)].double() for r in rels])
                w = logits.softmax(0)
                out[(b, *pos, h)] = sum(wi * v[(b, *kp, h)].double() for wi, kp in zip(w, keys))
    return out


def _inputs(spatial, heads=2, dim=8, dim_v=None, batch=2, dtype=torch.float32, seed=0, kernel=3, rpb=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, *spatial, heads, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, *spatial, heads, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, *spatial, heads, dim_v or dim, generator=g, dtype=dtype)
    table = torch.randn(heads, *[2 * kernel - 1] * len(spatial), generator=g, dtype=dtype) if rpb else None
    return q, k, v, table


CASES = [
    # spatial, kernel, dilation, causal
    ((11,), 3, 1, False),
    ((13,), 5, 2, True),
    ((7, 9), 3, 1, False),
    ((7, 10), 3, (2, 3), False),          # unequal dilation groups on both axes
    ((9, 8), 5, 1, (True, False)),
    ((6, 7), 3, 2, True),
    ((7, 7), 7, 1, False),                 # window == map: full attention path
    ((4, 5, 6), 3, (1, 1, 2), (False, True, False)),
]


@pytest.mark.parametrize('spatial,kernel,dilation,causal', CASES)
def test_reference_matches_loop_definition(spatial, kernel, dilation, causal):
    n = len(spatial)
    q, k, v, rpb = _inputs(spatial, batch=1, kernel=kernel)
    kern, dil = (kernel,) * n, dilation if isinstance(dilation, tuple) else (dilation,) * n
    cau = causal if isinstance(causal, tuple) else (causal,) * n
    expected = naive_na(q, k, v, kern, dil, cau, rpb, q.shape[-1] ** -0.5)
    with ops.use_backend('reference'):
        got = NA[n](q, k, v, kernel, dilation, causal, rpb=rpb)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('spatial,kernel,dilation,causal', CASES)
@pytest.mark.parametrize('with_rpb', [True, False])
def test_torch_backend_matches_reference_forward_backward(spatial, kernel, dilation, causal, with_rpb):
    n = len(spatial)
    q, k, v, rpb = _inputs(spatial, kernel=kernel, dim_v=6, rpb=with_rpb)
    results = {}
    for backend in ('reference', 'torch'):
        leaves = [t.clone().requires_grad_() for t in (q, k, v) + ((rpb,) if with_rpb else ())]
        table = leaves[3] if with_rpb else None
        with ops.use_backend(backend):
            out = NA[n](*leaves[:3], kernel, dilation, causal, rpb=table, scale=0.3)
        grad_out = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        grads = torch.autograd.grad(out, leaves, grad_out)
        results[backend] = (out, grads)
    torch.testing.assert_close(results['torch'][0], results['reference'][0], atol=1e-5, rtol=1e-5)
    for g_torch, g_ref in zip(results['torch'][1], results['reference'][1]):
        torch.testing.assert_close(g_torch, g_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_forward_backward(dtype):
    q, k, v, rpb = _inputs((10, 12), kernel=5, dtype=dtype)
    with ops.use_backend('reference'):
        ref = ops.na2d(q.float(), k.float(), v.float(), 5, 2, rpb=rpb.float())
    leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    out = ops.na2d(*leaves[:3], 5, 2, rpb=leaves[3])
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad.float()).all()
               for t in leaves)


@pytest.mark.parametrize('spatial,kernel,dilation,causal', [
    ((13,), 5, 2, False), ((9, 11), 3, 1, False), ((10, 12), 5, (2, 1), (False, True)),
    ((14, 14), 7, 2, False), ((5, 6, 7), 3, (1, 2, 1), False)])
def test_reference_matches_natten(spatial, kernel, dilation, causal):
    natten = pytest.importorskip('natten', reason='natten is the optional reference implementation')
    n = len(spatial)
    q, k, v, _ = _inputs(spatial, dim=16, kernel=kernel, rpb=False)
    fn = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[n]
    with torch.no_grad():  # natten's CPU (flex) backend is forward-only
        expected = fn(q, k, v, kernel_size=kernel, dilation=dilation, is_causal=causal)
        for backend in ('reference', 'torch'):
            with ops.use_backend(backend):
                got = NA[n](q, k, v, kernel, dilation, causal)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_default_scale_and_rpb_added_after_scaling():
    q, k, v, rpb = _inputs((7, 8), kernel=3)
    with ops.use_backend('reference'):
        default = ops.na2d(q, k, v, 3, rpb=rpb)
        explicit = ops.na2d(q, k, v, 3, rpb=rpb, scale=q.shape[-1] ** -0.5)
        doubled = ops.na2d(q * 2, k, v, 3, rpb=rpb, scale=q.shape[-1] ** -0.5 / 2)
    torch.testing.assert_close(default, explicit)
    torch.testing.assert_close(default, doubled, atol=1e-5, rtol=1e-5)


def test_backend_context_nests_and_restores():
    assert ops.get_backend() == 'auto'
    with ops.use_backend('torch'):
        with ops.use_backend('reference'):
            assert ops.get_backend() == 'reference'
        assert ops.get_backend() == 'torch'
    assert ops.get_backend() == 'auto'


def test_count_attention_macs():
    q, k, v, _ = _inputs((8, 9), heads=3, dim=4, dim_v=6, kernel=5, rpb=False)
    with ops.count_attention_macs() as counter:
        ops.na2d(q, k, v, 5)
    assert counter.macs == 2 * 3 * 72 * 25 * (4 + 6)


def test_module_pads_small_maps_and_matches_manual_padding():
    torch.manual_seed(0)
    layer = ops.NeighborhoodAttention2D(16, 2, kernel_size=3, dilation=2).eval()
    x = torch.randn(2, 4, 7, 16)  # 4 < 3*2: padded to 6 rows
    out = layer(x)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 2))
    q, k, v = layer.qkv(padded).reshape(2, 6, 7, 3, 2, 8).unbind(3)
    manual = ops.na2d(q, k, v, 3, 2, rpb=layer.rpb).reshape(2, 6, 7, 16)[:, :4]
    torch.testing.assert_close(out, layer.proj(manual))


def test_module_parameter_names_and_no_rpb():
    layer = ops.NeighborhoodAttention2D(32, 4, kernel_size=7)
    assert set(layer.state_dict()) == {'qkv.weight', 'qkv.bias', 'rpb', 'proj.weight', 'proj.bias'}
    assert layer.rpb.shape == (4, 13, 13)
    plain = ops.NeighborhoodAttention2D(32, 4, kernel_size=7, rel_pos_bias=False, qkv_bias=False)
    assert set(plain.state_dict()) == {'qkv.weight', 'proj.weight', 'proj.bias'}
    plain(torch.randn(1, 7, 8, 32)).sum().backward()


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=4), 'kernel_size must be an odd int >= 3'),
    (dict(kernel_size=1), 'kernel_size must be an odd int >= 3'),
    (dict(kernel_size=(3, 3, 3)), 'sequence of 2 values'),
    (dict(dilation=0), 'dilation must be an int >= 1'),
    (dict(kernel_size=5, dilation=2), r'axis 0 has size 7 but kernel_size=5, dilation=2 needs >= 10'),
    (dict(is_causal='yes'), 'is_causal must hold bools'),
])
def test_named_argument_errors(kwargs, match):
    q, k, v, _ = _inputs((7, 12), rpb=False)
    args = dict(kernel_size=3) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        ops.na2d(q, k, v, **args)


def test_tensor_errors():
    q, k, v, rpb = _inputs((7, 8), kernel=3)
    with pytest.raises(ValueError, match='q must have 5 dims'):
        ops.na2d(q[0], k, v, 3)
    with pytest.raises(ValueError, match='k must have the shape of q'):
        ops.na2d(q, k[:, :6], v, 3)
    with pytest.raises(ValueError, match='v must match q'):
        ops.na2d(q, k, v[:, :, :5], 3)
    with pytest.raises(TypeError, match='share one dtype'):
        ops.na2d(q, k.double(), v, 3)
    with pytest.raises(ValueError, match=r'rpb must have shape \[heads, 2\*kernel_size-1, ...\] = \(2, 5, 5\)'):
        ops.na2d(q, k, v, 3, rpb=rpb.transpose(0, 1))
    with pytest.raises(ValueError, match='dropout_p must be in'):
        ops.na2d(q, k, v, 3, dropout_p=1.5)
    with pytest.raises(ValueError, match='NeighborhoodAttention2D expects'):
        ops.NeighborhoodAttention2D(16, 2, 3)(torch.randn(1, 8, 8, 12))


def test_backend_errors():
    q, k, v, rpb = _inputs((7, 8), kernel=3)
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend('cuda-fast'):
            pass
    with ops.use_backend('flex'):
        with pytest.raises(RuntimeError, match="backend 'flex' runs on CUDA tensors only"):
            ops.na2d(q, k, v, 3)
    if not ops.natten_available():
        with ops.use_backend('natten'):
            with pytest.raises(RuntimeError, match="backend 'natten' needs NATTEN"):
                ops.na2d(q, k, v, 3)
    with ops.use_backend('natten'):
        with pytest.raises(ValueError, match="backend 'natten' supports neither rpb"):
            ops.na2d(q, k, v, 3, rpb=rpb)


@pytest.mark.parametrize('spatial,kernel,dilation,causal', [((13,), 5, 2, False), ((10, 12), 5, (2, 1), (False, True))])
def test_forced_natten_backend_matches_reference(spatial, kernel, dilation, causal):
    pytest.importorskip('natten', reason='natten is the optional fast path')
    n = len(spatial)
    q, k, v, _ = _inputs(spatial, dim=16, kernel=kernel, rpb=False)
    with torch.no_grad():  # without NATTEN's compiled library its CPU path is forward-only
        with ops.use_backend('natten'):
            got = NA[n](q, k, v, kernel, dilation, causal)
        with ops.use_backend('reference'):
            expected = NA[n](q, k, v, kernel, dilation, causal)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_torch_and_reference_and_is_stochastic():
    q, k, v, _ = _inputs((8, 8), rpb=False)
    torch.manual_seed(1)
    a = ops.na2d(q, k, v, 3, dropout_p=0.5)
    b = ops.na2d(q, k, v, 3, dropout_p=0.5)
    assert not torch.equal(a, b)
    assert math.isfinite(a.sum().item())


def test_auto_flex_admits_a_bounded_number_of_map_shapes(monkeypatch):
    """``auto`` compiles flex for a few map shapes only; further shapes go to the tiled path (no recompilation
    storm on detection inputs of changing size), while admitted shapes keep using flex."""
    from attnzoo.ops import neighborhood
    monkeypatch.setattr(neighborhood, '_flex_shapes', set())
    limit = neighborhood._FLEX_MAX_SHAPES
    maps = [torch.empty(1, 8 + i, 9, 2, 4) for i in range(limit + 2)]
    assert all(neighborhood._flex_shape_admitted(m) for m in maps[:limit])
    assert not any(neighborhood._flex_shape_admitted(m) for m in maps[limit:])
    assert neighborhood._flex_shape_admitted(maps[0])


def test_availability_checks_are_compile_constants(monkeypatch):
    """``auto`` asks whether NATTEN / Triton exist while torch.compile traces a model; the import inside the
    check must not break the graph (it did on a GPU machine without NATTEN)."""
    from attnzoo.ops import neighborhood
    monkeypatch.setitem(sys.modules, 'natten', None)  # `import natten` raises ImportError
    monkeypatch.setattr(neighborhood, '_AVAILABLE', {})

    def fn(x):
        return x + neighborhood.natten_fused_available() + neighborhood.natten_available() \
            + neighborhood.triton_available()

    explained = torch._dynamo.explain(fn)(torch.ones(2))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert neighborhood._AVAILABLE['natten'] is False
