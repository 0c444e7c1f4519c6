"""attnzoo.ops.dynamic_dwconv2d against a direct per-pixel loop (the CUDA kernel's definition)."""
import pytest
import torch

from attnzoo.ops import count_attention_macs, dynamic_dwconv2d, use_backend


def loop_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out[b,c,h,w] = sum_{i,j} weight[b, c // (C/G), i, j, h, w] * x[b, c, h+i-r, w+j-r], zero outside."""
    b, c, h, w = x.shape
    g, k = weight.shape[1], weight.shape[2]
    r = k // 2
    out = torch.zeros_like(x)
    for bi in range(b):
        for ci in range(c):
            gi = ci // (c // g)
            for y in range(h):
                for xx in range(w):
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            yy, xj = y + i - r, xx + j - r
                            if 0 <= yy < h and 0 <= xj < w:
                                acc += float(weight[bi, gi, i, j, y, xx]) * float(x[bi, ci, yy, xj])
                    out[bi, ci, y, xx] = acc
    return out


_LOOP_CACHE = {}


@pytest.mark.parametrize('backend', ['reference', 'torch', 'auto'])
@pytest.mark.parametrize('k,shape,groups', [(7, (2, 6, 5, 9), 3), (3, (1, 4, 4, 3), 1), (5, (1, 2, 2, 6), 2)])
def test_matches_per_pixel_loop(backend, k, shape, groups):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    wt = torch.randn(shape[0], groups, k, k, shape[2], shape[3], dtype=torch.float64)
    with use_backend(backend):
        out = dynamic_dwconv2d(x, wt, k)
        flat = dynamic_dwconv2d(x, wt.flatten(1, 3), k)  # raw hypernetwork layout [B, G*k*k, H, W]
    key = (k, shape, groups)
    if key not in _LOOP_CACHE:
        _LOOP_CACHE[key] = loop_reference(x, wt)
    ref = _LOOP_CACHE[key]
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.equal(out, flat)


def test_backends_agree_forward_backward_fp32():
    torch.manual_seed(1)
    x = torch.randn(2, 12, 11, 13, requires_grad=True)
    wt = torch.randn(2, 2, 7, 7, 11, 13, requires_grad=True)
    grads = {}
    for backend in ('reference', 'torch'):
        with use_backend(backend):
            out = dynamic_dwconv2d(x, wt, 7)
        g = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
        gx, gw = torch.autograd.grad(out, (x, wt), g)
        grads[backend] = (out.detach(), gx, gw)
    for a, b in zip(grads['reference'], grads['torch']):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(1, 1, 3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    for backend in ('reference', 'torch'):
        with use_backend(backend):
            assert torch.autograd.gradcheck(lambda a, b: dynamic_dwconv2d(a, b, 3), (x, wt))


def test_macs_counted():
    x = torch.randn(2, 6, 5, 4)
    wt = torch.randn(2, 3, 7, 7, 5, 4)
    with count_attention_macs() as counter:
        dynamic_dwconv2d(x, wt, 7)
    assert counter.macs == 2 * 6 * 5 * 4 * 49


@pytest.mark.parametrize('bad,msg', [
    (dict(kernel_size=4), 'odd'),
    (dict(x=torch.randn(2, 6, 5)), r'\[B, C, H, W\]'),
    (dict(weight=torch.randn(2, 4, 7, 7, 5, 4)), 'divide'),
    (dict(weight=torch.randn(2, 3, 7, 7, 4, 5)), 'weight must be'),
    (dict(weight=torch.randn(2, 3, 7, 7, 5, 4, dtype=torch.float64)), 'dtype'),
])
def test_errors(bad, msg):
    args = dict(x=torch.randn(2, 6, 5, 4), weight=torch.randn(2, 3, 7, 7, 5, 4), kernel_size=7)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=msg):
        dynamic_dwconv2d(args['x'], args['weight'], args['kernel_size'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 17, 19)
    wt = torch.randn(2, 2, 7, 7, 17, 19)
    for backend in ('reference', 'torch'):
        with use_backend(backend):
            out = dynamic_dwconv2d(x.cuda(), wt.cuda(), 7).cpu()
        torch.testing.assert_close(out, dynamic_dwconv2d(x, wt, 7), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('backend', ['flex', 'natten', 'triton'])
def test_forced_backend_without_a_kernel_raises(backend):
    x, wt = torch.randn(1, 2, 5, 5), torch.randn(1, 1, 3, 3, 5, 5)
    with use_backend(backend), pytest.raises(ValueError, match=f"dynamic_dwconv2d: backend '{backend}' is not "
                                                               "implemented for this op.*no fused kernel"):
        dynamic_dwconv2d(x, wt, 3)
