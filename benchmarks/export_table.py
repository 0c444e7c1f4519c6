"""The export table of issue 22: every registered variant through torch.export and ONNX Runtime, on the CPU.

::

    python benchmarks/export_table.py                       # every variant, each at its pretrained input size
    python benchmarks/export_table.py --side 64 --models dinat_mini favit_b0 --out benchmarks/results/cpu_export

Each variant is built at random init, exported with a dynamic batch (``attnzoo.cli.export``; traced at batch 2),
saved and reloaded as ``.pt2`` and as ONNX, and both files are run at batch 3 against eager PyTorch. ``--side S``
runs the variants that take any size (``pretrained_cfg['fixed_input_size']`` False) at ``S x S`` to fit a CPU; the
others keep their one size. Each variant runs in its own subprocess (a failure or a hang is its row, ``--timeout``). Writes ``<out>.json`` (one record per variant) and ``<out>.md``.
"""
import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAMILY_ORDER = ('nat', 'biformer', 'l2vit', 'favit', 'sparsifiner', 'dlgsanet')


def _input_size(model, side):
    size = tuple(model.pretrained_cfg['input_size'])
    if side and not model.pretrained_cfg.get('fixed_input_size', False):
        return (size[0], side, side)
    return size


def _measure(name: str, side: int) -> dict:
    """Export ``name`` both ways and check both files; the record of one table row."""
    import torch
    from attnzoo.cli import export as E
    torch.manual_seed(0)
    model = E.build_model(name, None, False)
    row = {'model': name, 'family': E.family_of(model)}
    size = _input_size(model, side)
    row['input_size'] = list(size)
    t0 = time.perf_counter()
    program = E.export_program(model, torch.randn(2, *size), E.dynamic_shapes(model, True, False))
    row['export_s'] = round(time.perf_counter() - t0, 1)
    x = torch.randn(3, *size)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in E.FORMATS:
            path = Path(tmp) / f'{name}.{fmt}'
            try:
                if fmt == 'pt2':
                    torch.export.save(program, str(path))
                else:
                    E.export_onnx(program, path)
                check = E.check_file(model, path, fmt, x, steps=2)
                row[fmt] = {'ok': check.max_rel_error <= 1e-4, 'max_abs_error': check.max_abs_error,
                            'max_rel_error': check.max_rel_error, 'eager_ms': round(check.eager_ms, 1),
                            'ms': round(check.exported_ms, 1)}
            except Exception as err:  # noqa: BLE001 - the row reports any failure of this format
                row[fmt] = {'ok': False, 'error': f'{type(err).__name__}: {str(err).splitlines()[0][:300]}'}
    return row


def _child(name, side, queue):
    try:
        queue.put(_measure(name, side))
    except Exception as err:  # noqa: BLE001 - a failed export is the row's result
        queue.put({'model': name, 'error': f'{type(err).__name__}: {str(err).splitlines()[0][:300]}',
                   'traceback': traceback.format_exc()[-2000:]})


def run_one(name: str, side: int, timeout: float) -> dict:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, side, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty: the child hung or died
        return {'model': name, 'error': f'no result within {timeout:.0f} s (exit code {proc.exitcode})'}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def _cell(record: dict, fmt: str) -> str:
    if 'error' in record:
        return 'fails: ' + record['error'][:80]
    r = record[fmt]
    if 'error' in r:
        return 'fails: ' + r['error'][:80]
    return f"{'ok' if r['ok'] else 'MISMATCH'}, max abs {r['max_abs_error']:.1e} (rel {r['max_rel_error']:.1e})"


def markdown(records, side) -> str:
    lines = ['# Export on the CPU (issue 22)', '',
             f"Random init, dynamic batch (traced at 2, checked at 3); input: each variant's pretrained size"
             f"{f', {side}x{side} for the variants of any input size' if side else ''}. "
             "Written by benchmarks/export_table.py.", '',
             '| model | input | `torch.export` (.pt2 reloaded) | ONNX + ONNX Runtime (CPU) | eager / ORT ms (B=3) |',
             '|---|---|---|---|---|']
    for r in records:
        ms = f"{r['onnx']['eager_ms']} / {r['onnx']['ms']}" if 'ms' in r.get('onnx', {}) else ''
        size = 'x'.join(map(str, r.get('input_size', [])[1:]))
        lines.append(f"| {r['model']} | {size} | {_cell(r, 'pt2')} | {_cell(r, 'onnx')} | {ms} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='*', help='default: every registered attnzoo variant')
    p.add_argument('--side', type=int, default=0, help='H = W for the dynamic-size families (0: pretrained size)')
    p.add_argument('--timeout', type=float, default=900, help='seconds per variant')
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks/results/cpu_export')
    args = p.parse_args(argv)
    if args.side < 0:
        raise SystemExit(f'--side must be >= 0, got {args.side}')
    import timm
    import attnzoo  # noqa: F401
    names = args.models or timm.list_models(module=list(FAMILY_ORDER))
    records = []
    for name in names:
        records.append(run_one(name, args.side, args.timeout))
        print(markdown(records[-1:], args.side).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(records, indent=1))
    args.out.with_suffix('.md').write_text(markdown(records, args.side))


if __name__ == '__main__':
    main()
