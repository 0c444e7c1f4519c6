"""topk_connectivity (Sparsifiner's predictor selection) and connectivity_attention on the CPU: the tie rule
(lower index wins), permutation equivariance for distinct scores, the layouts, named errors; and, in Triton's
interpreter (``TRITON_INTERPRET=1``, in a subprocess: set before Triton compiles anything), the fused predictor
against the unfused definition and the bitmask attention kernels against ``reference`` (output and gradients).
The same kernels on CUDA: ``test_sparse_cuda.py``."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attnzoo.ops as ops
from attnzoo.ops.connectivity import bitmask_to_mask, connectivity_attention, mask_to_bitmask, topk_connectivity
from attnzoo.ops.sparse import indices_to_mask


def random_predictor(B=2, H=2, Nq=16, Nk=17, c=8, r=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q_c, k_c = torch.randn(B, H, Nq, c, generator=g), torch.randn(B, H, Nk, c, generator=g)
    proj_n = torch.randn(Nk, r, generator=g) * 0.3
    basis = torch.randn(r, Nk, generator=g).abs()
    return q_c, k_c, proj_n, basis.masked_fill(basis < 0.5, 0.)


def tied_predictor(Nq=5, Nk=40, c=4, r=6):
    """Every coefficient ties (q_c = 0: a uniform softmax), and the scores of the first three basis rows tie
    between the many keys sharing a column pattern of {0, 1, 2}."""
    g = torch.Generator().manual_seed(1)
    basis = torch.randint(0, 3, (r, Nk), generator=g).float()
    return torch.zeros(1, 1, Nq, c), torch.randn(1, 1, Nk, c, generator=g), torch.randn(Nk, r, generator=g), basis


def by_definition(basis: torch.Tensor, basis_topk: int, budget: int):
    """Kept keys of a uniform-coefficient row: the first ``basis_topk`` basis rows (the lowest indices among equal
    coefficients), then the ``budget`` largest column sums, the lowest key index among equal sums."""
    scores = basis[:basis_topk].sum(0).tolist()
    return sorted(sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:budget])


def test_ties_go_to_the_lowest_index():
    """Fails with ``torch.topk`` (whose CPU tie order picks e.g. keys 10, 12, 11, 13, 9 of 17 equal scores)."""
    q_c, k_c, proj_n, basis = tied_predictor()
    with ops.use_backend('torch'):
        kept = topk_connectivity(q_c, k_c, proj_n, basis, 0.5, 3, 12)
    expected = by_definition(basis, 3, 12)
    assert len(set(basis[:3].sum(0).tolist())) < 12  # many exact ties, also across the budget boundary
    assert kept.dtype == torch.int32 and kept.shape == (1, 1, 5, 12)
    assert (kept == torch.tensor(expected, dtype=torch.int32)).all()
    zero = topk_connectivity(q_c, k_c, proj_n, torch.zeros_like(basis), 0.5, 3, 7)  # all scores 0
    assert (zero == torch.arange(7, dtype=torch.int32)).all()


def test_selection_follows_a_permutation_of_distinct_keys():
    q_c, k_c, proj_n, basis = random_predictor(Nk=33, r=8)
    perm = torch.randperm(33, generator=torch.Generator().manual_seed(3))
    kept = topk_connectivity(q_c, k_c, proj_n, basis, 0.7, 3, 9)
    permuted = topk_connectivity(q_c, k_c[:, :, perm], proj_n[perm], basis[:, perm], 0.7, 3, 9)
    assert (perm[permuted.long()].sort(-1).values == kept.long()).all()


def test_layouts_agree_including_bit_31():
    q_c, k_c, proj_n, basis = random_predictor(Nk=40)
    indices = topk_connectivity(q_c, k_c, proj_n, basis, 0.7, 3, 20)
    bitmask = topk_connectivity(q_c, k_c, proj_n, basis, 0.7, 3, 20, layout='bitmask')
    mask = indices_to_mask(indices, 40)
    assert bitmask.dtype == torch.int32 and bitmask.shape == (2, 2, 16, 2)
    assert (bitmask == mask_to_bitmask(mask)).all() and (bitmask_to_mask(bitmask, 40) == mask).all()
    assert (indices.diff(dim=-1) > 0).all()  # ascending key order
    assert mask[..., 31].any() and (bitmask[..., 0] < 0).any()  # key 31 is the sign bit of word 0


def test_connectivity_attention_is_the_masked_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 17, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 2, 16, 17, generator=g) < 0.4
    mask[..., 0] = True
    bitmask = mask_to_bitmask(mask)
    full = torch.cat([torch.ones(2, 2, 1, 17, dtype=torch.bool), mask], 2)
    with ops.count_attention_macs() as c:
        out = connectivity_attention(q, k, v, bitmask, 7, dense_rows=1)
    assert c.macs == 2 * 2 * (17 + 16 * 7) * 16
    with ops.use_backend('reference'):
        torch.testing.assert_close(out, connectivity_attention(q, k, v, bitmask, 7, dense_rows=1))
    ref = ((q @ k.transpose(-1, -2)) * 8 ** -0.5).masked_fill(~full, float('-inf')).softmax(-1) @ v
    torch.testing.assert_close(out, ref)


def test_bad_arguments_are_named():
    q_c, k_c, proj_n, basis = random_predictor()
    cases = [(dict(budget=0), 'budget must be an int in \\[1, Nk=17\\]'),
             (dict(budget=18), 'budget'), (dict(basis_topk=7), 'basis_topk must be an int in \\[1, r=6\\]'),
             (dict(layout='dense'), 'layout must be one of'), (dict(basis=basis[:, :5]), 'disagree')]
    for kwargs, match in cases:
        args = {**dict(q_c=q_c, k_c=k_c, proj_n=proj_n, basis=basis, scale=0.5, basis_topk=3, budget=5), **kwargs}
        with pytest.raises(ValueError, match=match):
            topk_connectivity(**args)
    with pytest.raises(TypeError, match='scale must be a finite number'):
        topk_connectivity(q_c, k_c, proj_n, basis, float('nan'), 3, 5)
    q = torch.randn(1, 2, 17, 16)
    words = torch.zeros(1, 2, 16, 1, dtype=torch.int32)
    with pytest.raises(TypeError, match='bitmask must be an int32 tensor'):
        connectivity_attention(q, q, q, words.long(), 4, dense_rows=1)
    with pytest.raises(ValueError, match='bitmask must have shape'):
        connectivity_attention(q, q, q, words, 4, dense_rows=0)
    with pytest.raises(ValueError, match='num_kept must be an int in \\[1, Nk=17\\]'):
        connectivity_attention(q, q, q, words, 0, dense_rows=1)
    if not ops.triton_available():
        with ops.use_backend('triton'), pytest.raises(RuntimeError, match="backend 'triton' needs Triton"):
            topk_connectivity(q_c, k_c, proj_n, basis, 0.5, 3, 5)
        with ops.use_backend('triton'), pytest.raises(ValueError, match="does not support tensors on cpu"):
            connectivity_attention(q, q, q, words, 4, dense_rows=1)


# ---------------------------------------------------------------------------------------------------------------
# The Triton kernels in the interpreter
# ---------------------------------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import attnzoo.ops as ops
    from attnzoo.ops.connectivity import connectivity_attention, mask_to_bitmask, topk_connectivity
    sys.path.insert(0, sys.argv[2])
    from test_connectivity import by_definition, random_predictor, tied_predictor

    def near_tie_rows(q_c, k_c, proj_n, basis, scale, topk, budget, gap=1e-5):
        """Rows whose coefficient top-k or score top-budget boundary is within rounding (fp64 values)."""
        coef = ((q_c.double() @ (k_c.double().transpose(-1, -2) @ proj_n.double())) * scale).softmax(-1)
        c = coef.sort(-1, descending=True).values
        near = (c[..., topk - 1] - c[..., topk]) <= gap * c[..., topk - 1]
        top = coef.topk(topk, -1).indices
        scores = torch.zeros_like(coef).scatter(-1, top, coef.gather(-1, top)) @ basis.double()
        s = scores.sort(-1, descending=True).values
        if budget < s.shape[-1]:
            near |= (s[..., budget - 1] - s[..., budget]) <= gap * s[..., budget - 1]
        return near

    out = {'predictor': [], 'attention': []}
    for case in json.loads(sys.argv[1])['predictor']:
        q_c, k_c, proj_n, basis = random_predictor(**case['shape'])
        args = (q_c, k_c, proj_n, basis, case['scale'], case['topk'], case['budget'])
        near = near_tie_rows(*args)
        row = {'compared': float((~near).float().mean())}
        for layout in ('indices', 'bitmask'):
            with ops.use_backend('torch'):
                ref = topk_connectivity(*args, layout=layout)
            with ops.use_backend('triton'):
                got = topk_connectivity(*args, layout=layout)
            row[layout] = bool((got == ref).all(-1)[~near].all())
        out['predictor'].append(row)
    q_c, k_c, proj_n, basis = tied_predictor()
    with ops.use_backend('triton'):
        tied = topk_connectivity(q_c, k_c, proj_n, basis, 0.5, 3, 12)
    out['ties'] = bool((tied == torch.tensor(by_definition(basis, 3, 12), dtype=torch.int32)).all())

    for case in json.loads(sys.argv[1])['attention']:
        torch.manual_seed(0)
        B, H, N, D = case['shape']
        dtype = getattr(torch, case['dtype'])
        qkv = torch.randn(B, N, 3, H, D).permute(2, 0, 3, 1, 4)  # strided views, as a ViT's qkv split
        mask = torch.rand(B, H, N - 1, N) < case['keep']
        mask[:, :, :, 32:64] = False  # a key block no query keeps: skipped
        mask[0, 0, 3] = False  # a row keeping no key: zeros
        bitmask = mask_to_bitmask(mask)
        grad_out = torch.randn(B, H, N, D)
        runs = {}
        for backend, cast in (('triton', dtype), ('reference', torch.float64)):
            x = qkv.to(cast).requires_grad_()
            with ops.use_backend(backend):
                o = connectivity_attention(*x.unbind(0), bitmask, 1, dense_rows=1)
            runs[backend] = [o, *torch.autograd.grad(o, x, grad_out.to(o.dtype))]
        out['attention'].append([float((a.double() - b).norm() / b.norm()) for a, b in zip(runs['triton'],
                                                                                          runs['reference'])])
    print(json.dumps(out))
''')

CASES = {
    'predictor': [
        dict(shape=dict(Nq=16, Nk=17, c=8, r=6), scale=0.7, topk=3, budget=5),
        dict(shape=dict(B=1, H=3, Nq=39, Nk=40, c=8, r=12, seed=1), scale=0.5, topk=4, budget=20),
        dict(shape=dict(B=1, H=2, Nq=69, Nk=70, c=16, r=11, seed=2), scale=0.4, topk=8, budget=12),
    ],
    'attention': [
        dict(shape=(2, 2, 70, 16), keep=0.3, dtype='float32'),
        dict(shape=(1, 2, 41, 32), keep=0.5, dtype='float32'),
        dict(shape=(1, 1, 70, 16), keep=0.3, dtype='float16'),
    ],
}


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')
def test_kernels_match_the_definition_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(CASES), os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, row in zip(CASES['predictor'], result['predictor']):
        assert row['compared'] > 0.9 and row['indices'] and row['bitmask'], (case, row)
    assert result['ties']
    for case, errors in zip(CASES['attention'], result['attention']):
        tol = 1e-5 if case['dtype'] == 'float32' else 3e-3
        assert len(errors) == 2 and max(errors) < tol, (case, errors)
