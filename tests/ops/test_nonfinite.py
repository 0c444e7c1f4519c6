"""Non-finite inputs (``attnzoo.ops._nonfinite``): a NaN or an infinity in one key's k or v makes the whole output
of exactly the queries that attend to that key NaN, on every backend; every other output is the finite result.
Which queries attend to a key is found independently, from the finite inputs: those whose output changes when
that key changes."""
import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops.sparse import topk_attention

NA = {1: ops.na1d, 2: ops.na2d, 3: ops.na3d}

NA_CASES = [
    # spatial, kernel, dilation, causal, bad key position
    ((14, 14), 7, 1, False, (5, 5)),     # the case: tiles share halo keys
    ((14, 14), 7, 1, False, (0, 13)),    # a corner
    ((11, 10), 3, (2, 3), False, (4, 7)),  # unequal dilation groups
    ((13,), 5, 2, True, (6,)),
    ((7, 6, 5), 3, 1, (False, True, False), (3, 2, 1)),
    ((5, 5), 5, 1, False, (2, 2)),       # the window is the whole map (plain attention path)
]


def _perturbed(t, pos):
    t = t.clone()
    t[(0, *pos, 1)] += 1.0
    return t


def _spoiled(t, pos, value):
    t = t.clone()
    t[(0, *pos, 1, 3)] = value
    return t


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
@pytest.mark.parametrize('which', ['k', 'v'])
@pytest.mark.parametrize('rpb', [False, True])
@pytest.mark.parametrize('spatial,kernel,dilation,causal,pos', NA_CASES)
def test_na_nonfinite_key_reaches_exactly_its_queries(spatial, kernel, dilation, causal, pos, rpb, which, value):
    n = len(spatial)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, *spatial, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    table = torch.randn(3, *[2 * kernel - 1] * n, generator=g, dtype=torch.float64) if rpb else None
    na = NA[n]
    args = dict(kernel_size=kernel, dilation=dilation, is_causal=causal, rpb=table)
    with ops.use_backend('reference'):
        clean = na(q, k, v, **args)
        moved = na(q, _perturbed(k, pos), _perturbed(v, pos), **args)
    attends = (clean != moved).any(-1)
    assert attends.any() and not attends.all()
    inputs = {'q': q, 'k': k, 'v': v}
    inputs[which] = _spoiled(inputs[which], pos, value)
    backends = ['reference', 'torch'] + (['natten'] if ops.natten_available() and not rpb else [])
    for backend in backends:
        dtype = torch.float32 if backend == 'natten' else torch.float64  # NATTEN's CPU path has no fp64
        with ops.use_backend(backend):
            out = na(*(inputs[name].to(dtype) for name in 'qkv'), **args).double()
        assert torch.equal(out.isnan().all(-1), attends), backend
        torch.testing.assert_close(out[~attends], clean[~attends], atol=1e-5, rtol=1e-5, msg=backend)


def test_na_nonfinite_query_reaches_only_itself():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 14, 14, 2, 8, generator=g) for _ in range(3))
    q[0, 5, 5, 1, 3] = float('nan')
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            out = ops.na2d(q, k, v, 7)
        assert out.isnan().any(-1).nonzero().tolist() == [[0, 5, 5, 1]], backend


def test_na_nonfinite_gradients_of_other_queries_are_finite():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 14, 14, 2, 8, generator=g) for _ in range(3))
    k[0, 0, 0, 0, 0] = float('nan')
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = ops.na2d(q, k, v, 7)
    keep = ~out.isnan()
    grads = torch.autograd.grad(out[keep].sum(), (q, k, v))
    assert all(torch.isfinite(gr).all() for gr in grads)


TRITON_CASES = [
    # spatial, kernel, dilation, rpb, bad key position
    ((14, 14), 7, 1, False, (5, 5)),       # the case: query tiles share halo keys
    ((11, 10), (5, 3), (2, 3), True, (4, 7)),  # unequal dilation groups, a bias
]

TRITON_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import attnzoo.ops as ops

    def moved(t, pos):
        t = t.clone()
        t[(0, *pos, 0)] += 1.0
        return t

    def spoiled(t, pos, value):
        t = t.clone()
        t[(0, *pos, 0, 3)] = value
        return t

    result = {'nonfinite': []}
    for spatial, kernel, dil, rpb, pos in json.loads(sys.argv[1]):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, *spatial, 2, 16, generator=g) for _ in range(3))
        ks = (kernel, kernel) if isinstance(kernel, int) else kernel
        table = torch.randn(2, 2 * ks[0] - 1, 2 * ks[1] - 1, generator=g) if rpb else None
        with ops.use_backend('reference'):
            clean = ops.na2d(q, k, v, kernel, dil, rpb=table)
            attends = (clean != ops.na2d(q, moved(k, pos), moved(v, pos), kernel, dil, rpb=table)).any(-1)
        for which in ('k', 'v'):
            for value in (float('nan'), -float('inf')):  # a -inf k: a zero weight, no NaN
                inputs = {'q': q, 'k': k, 'v': v}
                inputs[which] = spoiled(inputs[which], pos, value)
                with ops.use_backend('triton'):
                    out = ops.na2d(inputs['q'], inputs['k'], inputs['v'], kernel, dil, rpb=table)
                result['nonfinite'].append(dict(
                    which=which, value=str(value), attending=int(attends.sum()),
                    exact=bool(torch.equal(out.isnan().all(-1), attends)),
                    error=float((out[~attends] - clean[~attends]).abs().max())))
    g = torch.Generator().manual_seed(0)  # routing: 15 regions of 4 x 2 tokens, 4 routed to every query region
    q, k, v = (torch.randn(1, 12, 10, 2, 16, generator=g) for _ in range(3))
    routing = torch.rand(1, 15, 15, generator=g).argsort(-1)[..., :4]
    with ops.use_backend('reference'):
        clean = ops.routing_attention(q, k, v, (3, 5), 4, routing=routing)
        attends = (clean != ops.routing_attention(q, moved(k, (2, 7)), moved(v, (2, 7)), (3, 5), 4,
                                                  routing=routing)).any(-1)
    result['routing'] = []
    for which in ('k', 'v'):
        inputs = {'q': q, 'k': k, 'v': v}
        inputs[which] = spoiled(inputs[which], (2, 7), float('nan'))
        with ops.use_backend('triton'):
            out = ops.routing_attention(inputs['q'], inputs['k'], inputs['v'], (3, 5), 4, routing=routing)
        result['routing'].append(dict(which=which, attending=int(attends.sum()),
                                      exact=bool(torch.equal(out.isnan().any(-1), attends)),
                                      error=float((out[~attends] - clean[~attends]).abs().max())))
    with ops.use_backend('triton'):
        empty = torch.randn(0, 9, 9, 1, 16, requires_grad=True)
        out = ops.na2d(empty, empty, empty, 3, rpb=torch.zeros(1, 5, 5, requires_grad=True))
        out.sum().backward()
        result['empty'] = list(out.shape) + list(empty.grad.shape)
    print(json.dumps(result))
''')


@pytest.fixture(scope='module')
def triton_run():
    if not ops.triton_available() and __import__('importlib.util').util.find_spec('triton') is None:
        pytest.skip('needs Triton')
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', TRITON_SCRIPT, json.dumps(TRITON_CASES)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('which', ['k', 'v'])
def test_triton_nonfinite_key_reaches_exactly_its_queries(triton_run, which):
    """The fused forward kernel: a NaN or -inf in one key's k or v (masked pairs would multiply such a value by a
    zero weight; a -inf logit alone leaves a finite output) makes exactly the outputs of the queries whose window
    holds that key NaN; the others are the clean ones."""
    runs = [run for run in triton_run['nonfinite'] if run['which'] == which]
    assert len(runs) == 2 * len(TRITON_CASES)
    assert runs[0]['attending'] == 81  # 9 x 9 windows of a 7x7 kernel on a 14x14 map hold (5, 5)
    for run in runs:
        assert run['exact'], run
        assert run['error'] < 1e-5, run


def test_triton_routing_nan_stays_in_its_queries(triton_run):
    """The fused routing kernels (no mask, not given the rule): a NaN key or value reaches exactly the queries of
    the regions routed to its region (some elements of their outputs, for a NaN in one element of v)."""
    assert [run['which'] for run in triton_run['routing']] == ['k', 'v']
    for run in triton_run['routing']:
        assert 0 < run['attending'] < 240, run
        assert run['exact'], run
        assert run['error'] < 1e-5, run


def test_triton_empty_batch(triton_run):
    assert triton_run['empty'] == [0, 9, 9, 1, 16] * 2


# ---------------------------------------------------------------------------------------------
# topk_attention
# ---------------------------------------------------------------------------------------------

def _topk_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64) for _ in range(3))
    indices = torch.rand(2, 3, 11, 12, generator=g).argsort(-1)[..., :4]
    return q, k, v, indices


@pytest.mark.parametrize('which', ['k', 'v'])
@pytest.mark.parametrize('connectivity', ['indices', 'mask'])
def test_topk_nonfinite_key_reaches_exactly_its_rows(connectivity, which):
    q, k, v, indices = _topk_inputs()
    mask = ops.sparse.indices_to_mask(indices, 12, dense_rows=1)
    conn = dict(indices=indices) if connectivity == 'indices' else dict(mask=mask)
    key = 5
    attends = mask[:, :, :, key]
    inputs = {'q': q, 'k': k.clone(), 'v': v.clone()}
    inputs[which][:, :, key, 2] = float('nan')
    with ops.use_backend('reference'):
        clean = topk_attention(q, k, v, dense_rows=1, **conn)
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            out = topk_attention(inputs['q'], inputs['k'], inputs['v'], dense_rows=1, **conn)
        assert torch.equal(out.isnan().all(-1), attends), backend
        torch.testing.assert_close(out[~attends], clean[~attends], msg=backend)


@pytest.mark.parametrize('connectivity', ['indices', 'mask'])
def test_topk_nan_row_stays_nan_and_empty_rows_are_zero(connectivity):
    q, k, v, indices = _topk_inputs()
    q[0, 1, 4, 0] = float('nan')  # sparse row 4 (index row 3) of image 0, head 1
    mask = ops.sparse.indices_to_mask(indices, 12, dense_rows=1)
    mask[1, 2, 7] = False  # a row that keeps no key
    conn = dict(indices=indices) if connectivity == 'indices' else dict(mask=mask)
    for backend in ('reference', 'torch'):
        with ops.use_backend(backend):
            out = topk_attention(q, k, v, dense_rows=1, **conn)
        assert out.isnan().any(-1).nonzero().tolist() == [[0, 1, 4]], backend
        if connectivity == 'mask':
            assert torch.equal(out[1, 2, 7], torch.zeros(8, dtype=out.dtype)), backend


# ---------------------------------------------------------------------------------------------
# window_attention and routing_attention
# ---------------------------------------------------------------------------------------------

def _attending_and_spoiled(attend, pos, which, value, seed=0):
    """fp64 ``q, k, v`` ``[2, 12, 10, 3, 8]``; the clean output of ``attend``, the queries whose output moves with
    the key at ``(0, *pos, head 1)``, and the inputs with ``value`` in that key's ``which`` vector."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 12, 10, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    with ops.use_backend('reference'):
        clean = attend(q, k, v)
        attends = (clean != attend(q, _perturbed(k, pos), _perturbed(v, pos))).any(-1)
    inputs = {'q': q, 'k': k, 'v': v}
    inputs[which] = _spoiled(inputs[which], pos, value)
    return clean, attends, inputs


def _assert_reaches_exactly(attend, clean, attends, inputs, backends, whole=True):
    """A NaN reaches exactly the queries ``attends`` on every backend, in their whole output vector when ``whole``
    (the paths under ``_nonfinite``'s rule), else in some elements of it (a plain softmax over a gathered window:
    a NaN in one element of v spoils that element only); the other outputs are the clean ones."""
    assert attends.any() and not attends.all()
    for backend in backends:
        with ops.use_backend(backend):
            out = attend(inputs['q'], inputs['k'], inputs['v'])
        assert torch.equal((out.isnan().all(-1) if whole else out.isnan().any(-1)), attends), backend
        torch.testing.assert_close(out[~attends], clean[~attends], msg=backend)


@pytest.mark.parametrize('value', [float('nan'), -float('inf')])
@pytest.mark.parametrize('which', ['k', 'v'])
@pytest.mark.parametrize('window,shift,mask_padding,pos', [
    (4, 2, True, (5, 6)),              # Swin's region mask, padded map (12 x 10 -> 12 x 12)
    ((4, 5), (2, 3), False, (11, 9)),  # region mask at the wrapped corner, no padding
    ((5, 4), 0, True, (3, 1)),         # padding mask only
])
def test_window_nonfinite_key_reaches_exactly_its_queries(window, shift, mask_padding, pos, which, value):
    """The masked paths (region or padding mask; the dense reference) zero a bad key and NaN its queries."""
    attend = functools.partial(ops.window_attention, window_size=window, shift_size=shift,
                               mask_padding=mask_padding)
    _assert_reaches_exactly(attend, *_attending_and_spoiled(attend, pos, which, value), ('reference', 'torch'))


def test_window_plain_windows_keep_a_nan_in_its_window():
    """Plain windows (no mask) are not masked: a NaN in one element of v spoils that element of the outputs of
    its window's queries, and nothing else."""
    attend = functools.partial(ops.window_attention, window_size=4, mask_padding=False)
    clean, attends, inputs = _attending_and_spoiled(attend, (6, 6), 'v', float('nan'))
    _assert_reaches_exactly(attend, clean, attends, inputs, ('torch',), whole=False)


def _routing(topk, seed=1):
    """A routing ``[2, 15, topk]`` of the 15 regions (3 x 5 of 4 x 2 tokens) of the 12 x 10 map."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 15, 15, generator=g).argsort(-1)[..., :topk]


@pytest.mark.parametrize('value', [float('nan'), -float('inf')])
@pytest.mark.parametrize('which', ['k', 'v'])
@pytest.mark.parametrize('topk', [4, 9])  # >= 15 / 4 routed regions: the torch path's dense masked SDPA
def test_routing_nonfinite_key_reaches_exactly_its_queries(topk, which, value):
    """With a given routing (a NaN key also turns its region's routing logits to NaN, so the region-mean routing
    itself changes with it)."""
    attend = functools.partial(ops.routing_attention, num_regions=(3, 5), topk=topk, routing=_routing(topk))
    _assert_reaches_exactly(attend, *_attending_and_spoiled(attend, (2, 7), which, value), ('torch',))


@pytest.mark.parametrize('topk', [1, 3, 15])  # the torch path's gathers and its plain attention
def test_routing_gather_keeps_a_nan_in_its_queries(topk):
    attend = functools.partial(ops.routing_attention, num_regions=(3, 5), topk=topk, routing=_routing(topk))
    _assert_reaches_exactly(attend, *_attending_and_spoiled(attend, (2, 7), 'v', float('nan')),
                            ('reference', 'torch'), whole=False)


@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
def test_routing_flex_nonfinite_key_reaches_exactly_its_queries():
    """flex's masked pairs (eager flex on the CPU: the whole score matrix) under the same rule."""
    from attnzoo.ops.routing import _routing_flex
    routing = _routing(4)
    attend = functools.partial(ops.routing_attention, num_regions=(3, 5), topk=4, routing=routing)
    clean, attends, inputs = _attending_and_spoiled(attend, (9, 3), 'v', float('nan'))
    out = _routing_flex(inputs['q'], inputs['k'], inputs['v'], routing, 3, 5, (3 * 8) ** -0.5, compiled=False)
    assert torch.equal(out.isnan().all(-1), attends)
    torch.testing.assert_close(out[~attends], clean[~attends])
