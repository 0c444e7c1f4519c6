"""One GPU run for the fused routing-attention kernels (issue 17): correctness, an op table and a model table.

    python benchmarks/routing_triton_device.py --out $OUT          # about 6-8 minutes on an H200

(``--parts tests`` and ``--parts ops models`` split it into two shorter calls; Triton's kernel cache carries over.)

Parts (``--parts``, default all, in this order):

1. ``tests``: ``tests/ops/test_routing_cuda.py`` and the device tests of ``tests/ops/test_routing_triton.py`` (its
   interpreter tests belong to the CPU suite); pytest's report goes to ``routing_tests.txt``.
2. ``ops``: ``routing_ops.op_rows`` at the biformer_small stage shapes (B=64, bf16): forward + backward median ms and
   peak MiB of ``triton``, ``torch``, ``flex`` and ``reference``, and of one dense SDPA call over the same number of
   (query, key) pairs.
3. ``models``: ``routing_ops.model_rows`` (3 warm-up steps, CUDA-event median of ``--steps``, the allocator's peak
   over the pass with weights and optimizer state) of biformer_small and biformer_tiny with the routing backend
   forced to ``torch`` and to ``triton``, and of swin_tiny_patch4_window7_224: inference at B=256 and an AdamW train
   step at B=128, eager, bf16 autocast, channels_last; one process, each model freed before the next; ratios to
   Swin-T of the same run. (``tools/benchmark.py`` has no way to force a backend in its measurement processes.)

Writes ``routing_triton_device.json`` under ``--out`` after every part and prints the tables last.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'benchmarks')]

import routing_ops  # noqa: E402  (benchmarks/routing_ops.py)

import attnzoo.ops as ops  # noqa: E402
from attnzoo.utils.machine import machine_name  # noqa: E402

PARTS = ('tests', 'ops', 'models')
MODELS = ('biformer_small', 'biformer_tiny')
PEER = 'swin_tiny_patch4_window7_224'
ROUTING_BACKENDS = ('torch', 'triton')
TEST_FILES = ('tests/ops/test_routing_cuda.py', 'tests/ops/test_routing_triton.py')


def run_tests(out: Path, timeout_s: int) -> dict:
    """pytest on the routing tests that need the device; the full report is written to ``routing_tests.txt``."""
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rfEs', '-p', 'no:cacheprovider', *TEST_FILES,
           '-k', 'not interpreter']
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        (out / 'routing_tests.txt').write_text(f'timed out after {timeout_s} s\n{e.stdout or ""}')
        return dict(returncode=None, summary=f'timed out after {timeout_s} s')
    (out / 'routing_tests.txt').write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    return dict(returncode=proc.returncode, summary=lines[-1] if lines else proc.stderr[-500:])


RATIOS = {'inference_img_per_s': 'inference_vs_swin', 'train_img_per_s': 'train_vs_swin',
          'train_peak_MiB': 'train_peak_vs_swin'}


def model_table(runs: list, infer_batch: int, train_batch: int, steps: int) -> list:
    """``routing_ops.model_rows`` per ``(model, backend)`` (a failing one is reported in its row), with same-run
    ratios to the ``PEER`` row: img/s (higher is better) and train peak memory (lower is better)."""
    rows = []
    for model, backend in runs:
        try:
            rows += routing_ops.model_rows('cuda', [(model, backend)], infer_batch, train_batch, steps,
                                           torch.bfloat16, channels_last=True)
        except Exception as e:  # the other rows still run
            rows.append(dict(model=model, backend=backend, error=f'{type(e).__name__}: {e}'))
    base = next(r for r in rows if r['model'] == PEER)
    for row in rows:
        row.update({name: round(row[key] / base[key], 3) for key, name in RATIOS.items()
                    if key in row and base.get(key)})
    return rows


OP_COLUMNS = ('shape', 'topk', 'triton_ms', 'torch_ms', 'flex_ms', 'reference_ms', 'dense_sdpa_ms',
              'triton_over_dense_time', 'torch_over_triton_time', 'triton_MiB', 'torch_MiB', 'triton_over_torch_mem')
MODEL_COLUMNS = ('model', 'backend', 'inference_img_per_s', 'inference_vs_swin', 'train_img_per_s', 'train_vs_swin',
                 'train_peak_MiB', 'train_peak_vs_swin', 'error')


def _table(rows: list, columns: tuple) -> str:
    present = [c for c in columns if any(c in r for r in rows)]
    return routing_ops.to_markdown([{c: r.get(c, '') for c in present} for r in rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, required=True, help='folder for the JSON and the pytest report')
    parser.add_argument('--parts', nargs='+', choices=PARTS, default=list(PARTS))
    parser.add_argument('--tests-timeout', type=int, default=300, help='seconds for the pytest part')
    parser.add_argument('--op-batch', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=10, help='op table: timed repeats per backend')
    parser.add_argument('--batch-size', type=int, default=256, help='model table: inference batch')
    parser.add_argument('--train-batch-size', type=int, default=128, help='model table: train-step batch')
    parser.add_argument('--steps', type=int, default=10, help='model table: timed steps per pass')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit('routing_triton_device.py: needs a CUDA device')
    if not ops.triton_available():
        raise SystemExit('routing_triton_device.py: needs Triton')
    args.out.mkdir(parents=True, exist_ok=True)
    report = dict(machine=machine_name('cuda'), torch=torch.__version__, command=' '.join(sys.argv))
    path = args.out / 'routing_triton_device.json'
    for part in args.parts:
        if part == 'tests':
            report['tests'] = run_tests(args.out, args.tests_timeout)
        elif part == 'ops':
            report['ops'] = routing_ops.op_rows('cuda', args.op_batch, ('reference', 'torch', 'flex', 'triton'),
                                                args.repeats, torch.bfloat16)
        else:
            runs = [(m, b) for m in MODELS for b in ROUTING_BACKENDS] + [(PEER, 'torch')]
            report['models'] = model_table(runs, args.batch_size, args.train_batch_size, args.steps)
        path.write_text(json.dumps(report, indent=1))
        print(f'{part}: done', flush=True)
    print(f"\nmachine: {report['machine']}, torch {report['torch']}")
    if 'tests' in report:
        print(f"tests: {report['tests']['summary']} (rc {report['tests']['returncode']})")
    if 'ops' in report:
        print(f'\nop, fwd+bwd, B={args.op_batch}, bf16\n' + _table(report['ops'], OP_COLUMNS))
    if 'models' in report:
        print(f'\nmodels, eager bf16 channels_last, inference B={args.batch_size}, train B={args.train_batch_size}, '
              f'ratios to {PEER}\n' + _table(report['models'], MODEL_COLUMNS))


if __name__ == '__main__':
    main()
