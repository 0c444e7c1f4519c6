"""Issue 18 on one GPU, one run (about 8 minutes on an H200): the Sparsifiner CUDA tests, then the speed of the
sparse models against their dense peers, and the speed curve.

1. ``pytest`` of ``tests/ops/test_sparse_cuda.py`` and ``tests/models/test_sparsifiner_cuda.py`` (summary kept).
2. Eager, bf16 autocast, inference batch 256, SGD train step batch 128 (``tools/benchmark.py``'s step):
   * ``deit_small_patch16_224`` (timm) against ``sparsifiner_deit_small`` at keep 0.25, with every predictor
     (``torch``: unfused, ``triton``: fused) x attention (``torch``: masked SDPA, ``triton``: block-skipping
     kernel) variant (``Sparsifiner.set_backends``);
   * dense LV-ViT-S (``sparsifiner_lvvit_small`` at keep 1.0: the predictor is skipped) against
     ``sparsifiner_lvvit_small`` at keep 0.25, the same variants;
   * the curve: ``sparsifiner_deit_small`` at keep 1.0 / 0.5 / 0.25 / 0.1 at 224 and 384 px (197 / 577 tokens),
     fused predictor, both attentions, against DeiT-S at the same size.

    python benchmarks/sparsifiner_device.py --out $OUT/sparsifiner_device.json

Writes the JSON report (every row: img/s, ms per step, peak GiB, ratio to its dense peer) and prints a short
markdown table last. Measurements stop at ``--budget-s`` (rows past it are marked skipped).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))

import attnzoo  # noqa: E402,F401
from attnzoo.utils.timing import median_ms  # noqa: E402
from benchmark import _step  # noqa: E402  (tools/benchmark.py: one inference pass / one train step)

VARIANTS = [('torch', 'torch'), ('triton', 'torch'), ('triton', 'triton'), ('torch', 'triton')]
CUDA_TESTS = ['tests/ops/test_sparse_cuda.py', 'tests/models/test_sparsifiner_cuda.py']


def run_tests(timeout: int) -> dict:
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *CUDA_TESTS], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith('FAILED') or line.startswith('ERROR')]
    return {'returncode': proc.returncode, 'summary': lines[-1] if lines else proc.stderr[-2000:],
            'failed': failed, 'tail': '\n'.join(lines[-60:])}


def build(name: str, img_size: int, keep, backends):
    kwargs = {'img_size': img_size} if img_size != 224 else {}
    if keep is not None:
        kwargs['keep_rate'] = keep
    model = timm.create_model(name, **kwargs).cuda()
    if backends is not None:
        model.set_backends(*backends)
    return model


def measure(row: dict, args) -> dict:
    """img/s, ms and peak GiB of one model, inference then train step."""
    torch.manual_seed(0)
    model = build(row['model'], row['img_size'], row.get('keep'), row.get('backends'))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    spec = {'amp': 'bf16', 'mode': 'eager'}
    out = dict(row)
    for pass_, batch in (('inference', args.batch), ('train', args.train_batch)):
        x = torch.randn(batch, 3, row['img_size'], row['img_size'], device='cuda')
        step = _step(pass_, model, model, x, spec, optimizer)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = median_ms(step, args.steps, args.warmup, torch.device('cuda'))
        out[pass_] = {'ms': ms, 'img_s': batch * 1e3 / ms, 'peak_gib': torch.cuda.max_memory_allocated() / 2 ** 30}
        del x, step
    del model, optimizer
    torch.cuda.empty_cache()
    return out


def plan() -> list:
    rows = [dict(model='deit_small_patch16_224', img_size=224, peer=None, group='deit')]
    rows += [dict(model='sparsifiner_deit_small', img_size=224, keep=0.25, backends=b, peer='deit_small_patch16_224',
                  group='deit') for b in VARIANTS]
    rows.append(dict(model='sparsifiner_lvvit_small', img_size=224, keep=1.0, peer=None, group='lvvit', dense=True))
    rows += [dict(model='sparsifiner_lvvit_small', img_size=224, keep=0.25, backends=b, peer='lvvit_dense',
                  group='lvvit') for b in VARIANTS]
    for size in (224, 384):
        rows.append(dict(model='deit_small_patch16_224', img_size=size, peer=None, group=f'curve{size}'))
        for keep in (1.0, 0.5, 0.25, 0.1):
            for b in (('triton', 'torch'), ('triton', 'triton')):
                if keep == 1.0 and b[1] == 'triton':
                    continue  # keep 1.0 is dense SDPA whatever the backends
                rows.append(dict(model='sparsifiner_deit_small', img_size=size, keep=keep, backends=b,
                                 peer='deit_small_patch16_224', group=f'curve{size}'))
    return rows


def add_ratios(rows: list) -> None:
    dense = {}
    for r in rows:
        if 'inference' in r and r['peer'] is None:
            dense[(r['group'], 'lvvit_dense' if r.get('dense') else r['model'])] = r
    for r in rows:
        peer = dense.get((r['group'], r['peer']))
        if peer is None or 'inference' not in r:
            continue
        r['ratio'] = {p: peer[p]['ms'] / r[p]['ms'] for p in ('inference', 'train')}
        r['ratio']['train_memory'] = r['train']['peak_gib'] / peer['train']['peak_gib']


def table(rows: list) -> str:
    out = ['| group | model | keep | predictor / attention | inference img/s | train img/s | train GiB | '
           'ratio inf / train / mem |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        if 'inference' not in r:
            status = 'error' if 'error' in r else 'skipped'
            out.append(f"| {r['group']} | {r['model']} | {r.get('keep', '')} | {r.get('backends', '')} | {status} "
                       "| | | |")
            continue
        ratio = r.get('ratio')
        ratio_text = (f"{ratio['inference']:.2f} / {ratio['train']:.2f} / {ratio['train_memory']:.2f}"
                      if ratio else 'peer')
        backends = '/'.join(r['backends']) if r.get('backends') else ''
        out.append(f"| {r['group']} | {r['model']} | {r.get('keep', '')} | {backends} | "
                   f"{r['inference']['img_s']:.0f} | {r['train']['img_s']:.0f} | {r['train']['peak_gib']:.1f} | "
                   f"{ratio_text} |")
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', type=Path, required=True, help='JSON report path')
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--train-batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=8)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--test-timeout', type=int, default=240)
    p.add_argument('--budget-s', type=float, default=420, help='stop measuring after this many seconds in all')
    p.add_argument('--skip-tests', action='store_true')
    args = p.parse_args(argv)
    start = time.time()
    report = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__,
              'args': vars(args) | {'out': str(args.out)}}
    if not args.skip_tests:
        report['tests'] = run_tests(args.test_timeout)
        print(report['tests']['tail'], flush=True)
    rows = plan()
    for row in rows:
        if time.time() - start > args.budget_s:
            continue
        try:
            row.update(measure(row, args))
        except Exception as e:  # a failing variant must not lose the others
            row['error'] = f'{type(e).__name__}: {e}'[:500]
        print(json.dumps(row), flush=True)
    add_ratios(rows)
    report['rows'] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\ntests: {report.get('tests', {}).get('summary', 'skipped')}")
    print(table(rows))


if __name__ == '__main__':
    main()
