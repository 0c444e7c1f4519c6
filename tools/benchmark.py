"""Benchmark models side by side: params, MACs, throughput, latency and peak memory.

Any timm model name works (attnzoo's are registered on import), so peers are measured in the
same run as ours::

    python tools/benchmark.py --model dinat_tiny nat_tiny swin_tiny_patch4_window7_224 \\
        --device cuda --amp bf16 --batch-size 256 --train-batch-size 128 --json out.json

Each (model, pass) runs in a fresh subprocess so peak memory belongs to it alone: on CUDA the
allocator's peak (``max_memory_allocated``), on CPU the growth of the process's peak resident set
over its size after the model and inputs were created. Times are medians over ``--steps`` timed
iterations after ``--warmup`` (CUDA timed with events). MACs follow the papers' convention
(fvcore plus the nominal MACs of attnzoo's attention ops) at batch 1.
"""
import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

import attnzoo  # noqa: E402,F401  (registers attnzoo's models)
from attnzoo.utils.flops import count_macs, count_params  # noqa: E402
from attnzoo.utils.machine import machine_name  # noqa: E402
from attnzoo.utils.timing import median_ms  # noqa: E402

DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(name: str, device: torch.device, channels_last: bool, compile_model: bool):
    model = timm.create_model(name, pretrained=False).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return (torch.compile(model) if compile_model else model), model


def _prepare(spec: dict):
    """Build one (model, pass) measurement and run its warm-up (which compiles, with ``--compile``).

    Returns ``timed()``, which times ``spec['steps']`` steps and returns the result row."""
    torch.manual_seed(0)
    device = torch.device(spec['device'])
    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    model, plain = _build(spec['model'], device, spec['channels_last'], spec['compile'])
    cfg = plain.pretrained_cfg
    size = spec['img_size'] or cfg['input_size'][-1]
    batch = spec['batch_size']
    x = torch.randn(batch, 3, size, size, device=device)
    if spec['channels_last']:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = DTYPES[spec['amp']]

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()

    if spec['pass'] == 'inference':
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x)
    else:
        model.train()
        target = torch.randint(0, plain.num_classes, (batch,), device=device)
        optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-4)

        def step():
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mb()
    for _ in range(spec['warmup']):
        step()

    def timed() -> dict:
        ms = median_ms(step, spec['steps'], 1, device)  # one more warm-up step: --jobs may have paused the process
        peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == 'cuda'
                else max(0.0, _peak_rss_mb() - base_rss))
        return dict(ms_per_batch=round(ms, 3), img_per_s=round(batch * 1e3 / ms, 1), peak_mem_mb=round(peak, 1),
                    batch_size=batch, img_size=size)
    return timed


def _measure(spec: dict) -> dict:
    """One (model, pass) measurement; runs inside its own process."""
    return _prepare(spec)()


def _macs(spec: dict) -> dict:
    model = timm.create_model(spec['model']).eval()
    size = spec['img_size'] or model.pretrained_cfg['input_size'][-1]
    return dict(params_m=round(count_params(model) / 1e6, 3),
                gmacs=round(count_macs(model, (3, size, size)) / 1e9, 3), macs_img_size=size)


def _worker(fn, spec, queue):
    try:
        queue.put(('ok', fn(spec)))
    except Exception as e:  # reported in the table, not raised: other models still run
        queue.put(('error', f'{type(e).__name__}: {e}'))


def _in_subprocess(fn, spec: dict) -> dict:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(fn, spec, queue))
    proc.start()
    status, value = queue.get()
    proc.join()
    return value if status == 'ok' else {'error': value}


def _staged_worker(spec, queue, go):
    """``--jobs`` worker: prepare (compile, warm up) alongside the others, then time when told to."""
    try:
        timed = _prepare(spec)
        if spec['device'] == 'cuda':
            torch.cuda.empty_cache()  # the members timed before this one need the memory
        queue.put(('ready', None))
        go.wait()
        queue.put(('ok', timed()))
    except Exception as e:  # reported in the table, not raised: other models still run
        queue.put(('error', f'{type(e).__name__}: {e}'))


def _in_staged_subprocesses(specs: List[dict], jobs: int) -> List[dict]:
    """Run ``specs`` in processes, ``jobs`` at a time: each group prepares concurrently (with ``--compile`` the
    minutes of compilation overlap), then its members are timed one after another, when no process of the group
    is still preparing, so no timed loop shares the device with other work."""
    ctx = mp.get_context('spawn')
    results = []
    for first in range(0, len(specs), jobs):
        group = []
        for spec in specs[first:first + jobs]:
            queue, go = ctx.Queue(), ctx.Event()
            proc = ctx.Process(target=_staged_worker, args=(spec, queue, go))
            proc.start()
            group.append((spec, proc, queue, go))
        states = [queue.get() for _, _, queue, _ in group]  # every member ready (or failed)
        for (spec, proc, queue, go), (status, value) in zip(group, states):
            if status == 'ready':
                go.set()
                status, value = queue.get()
            proc.join()
            results.append(value if status == 'ok' else {'error': value})
            print(json.dumps(dict(model=spec['model'], **{'pass': spec['pass']}, **results[-1])), flush=True)
    return results


def run(args) -> dict:
    results, specs, owners = [], [], []  # owners[i]: the row that measurement specs[i] fills
    for name in args.model:
        row = {'model': name}
        base = dict(model=name, device=args.device, img_size=args.img_size, amp=args.amp, steps=args.steps,
                    warmup=args.warmup, channels_last=args.channels_last, compile=args.compile,
                    threads=args.threads)
        if name in args.macs_rows:
            row.update(args.macs_rows[name])
        elif not args.no_macs:
            row.update(_in_subprocess(_macs, base))
        for pass_ in (['inference', 'train'] if args.bench == 'both' else [args.bench]):
            batch = args.batch_size if pass_ == 'inference' else (args.train_batch_size or args.batch_size)
            specs.append(dict(base, **{'pass': pass_, 'batch_size': batch}))
            owners.append(row)
        results.append(row)
    if args.jobs > 1:
        measured = _in_staged_subprocesses(specs, args.jobs)
    else:
        measured = [_in_subprocess(_measure, spec) for spec in specs]
    for spec, row, res in zip(specs, owners, measured):
        row.update({f"{spec['pass']}_{k}": v for k, v in res.items()})
    for row in results:
        print(json.dumps(row), flush=True)
    machine = machine_name(args.device, args.threads)
    if args.baseline:
        _add_ratios(results, args.baseline)
    return dict(machine=machine, device=args.device, torch=torch.__version__, timm=timm.__version__,
                amp=args.amp, channels_last=args.channels_last, compile=args.compile, baseline=args.baseline,
                command=' '.join(sys.argv), results=results)


def _macs_rows(path: Optional[Path]) -> Dict[str, dict]:
    """Params / GMACs per model from an earlier report (they do not depend on the device)."""
    if path is None:
        return {}
    keys = ('params_m', 'gmacs', 'macs_img_size')
    return {r['model']: {k: r[k] for k in keys if k in r} for r in json.loads(path.read_text())['results']
            if 'gmacs' in r}


def render(args) -> dict:
    """A saved report (``--render``) with MACs from ``--macs-from`` and ratios to ``--baseline`` added."""
    report = json.loads(args.render.read_text())
    for row in report['results']:
        row.update(args.macs_rows.get(row['model'], {}))
    if args.baseline:
        _add_ratios(report['results'], args.baseline)
        report['baseline'] = args.baseline
    return report


def _add_ratios(results: list, baseline: str) -> None:
    """Same-run ratios to the baseline row: img/s (higher is better) and train peak memory (lower is better)."""
    ratios = {'inference_img_per_s': 'inference_vs_baseline', 'train_img_per_s': 'train_vs_baseline',
              'train_peak_mem_mb': 'train_peak_vs_baseline'}
    base = next(r for r in results if r['model'] == baseline)
    for r in results:
        for key, name in ratios.items():
            if key in r and base.get(key):
                r[name] = round(r[key] / base[key], 3)


def to_markdown(report: dict) -> str:
    cols = ['model', 'params_m', 'gmacs', 'inference_img_per_s', 'inference_vs_baseline', 'inference_ms_per_batch',
            'inference_peak_mem_mb', 'train_img_per_s', 'train_vs_baseline', 'train_peak_mem_mb',
            'train_peak_vs_baseline']
    cols = [c for c in cols if any(c in r for r in report['results'])]
    baseline = f", ratios to {report['baseline']} (same run)" if report.get('baseline') else ''
    lines = [f"machine: {report['machine']}, torch {report['torch']}, amp {report['amp']}, "
             f"compile {report['compile']}, channels_last {report['channels_last']}{baseline}",
             '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in report['results']:
        lines.append('| ' + ' | '.join(str(r.get(c, r.get('error', '')) if c != 'model' else r['model'])
                                       for c in cols) + ' |')
    return '\n'.join(lines)


def plot(report: dict, path: Path) -> None:
    """img/s against GMACs, one point per model and pass (needs matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for pass_, marker in (('inference', 'o'), ('train', 's')):
        pts = [(r['gmacs'], r[f'{pass_}_img_per_s'], r['model']) for r in report['results']
               if 'gmacs' in r and f'{pass_}_img_per_s' in r]
        for x, y, name in pts:
            ax.scatter(x, y, marker=marker, label=f'{pass_}' if name == pts[0][2] else None)
            ax.annotate(name, (x, y), fontsize=6)
    ax.set_xlabel('GMACs')
    ax.set_ylabel('img/s')
    ax.set_title(report['machine'])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', nargs='+', default=[], help='timm / attnzoo model names, measured side by side')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    p.add_argument('--bench', default='both', choices=['inference', 'train', 'both'])
    p.add_argument('--batch-size', type=int, default=8, help='inference batch')
    p.add_argument('--train-batch-size', type=int, default=None, help='train-step batch (default: --batch-size)')
    p.add_argument('--img-size', type=int, default=None, help="default: the model's pretrained_cfg input size")
    p.add_argument('--amp', default='none', choices=list(DTYPES))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true', help='torch.compile the model')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--jobs', type=int, default=1, help='prepare (build, compile, warm up) this many '
                   '(model, pass) measurements at once; they are still timed one at a time')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    p.add_argument('--no-macs', action='store_true', help='skip the (slow on CPU) MAC count')
    p.add_argument('--baseline', help='a --model entry: add same-run ratios of img/s and train memory to it')
    p.add_argument('--macs-from', type=Path, help='take params / GMACs from this earlier report (e.g. a CPU run: '
                   'fvcore may be missing on a GPU machine) instead of counting them')
    p.add_argument('--render', type=Path, help='measure nothing: re-render this saved report (table, plot), with '
                   '--macs-from and --baseline applied')
    p.add_argument('--json', type=Path, help='write the report here')
    p.add_argument('--markdown', type=Path, help='write the table here')
    p.add_argument('--plot', type=Path, help='write an img/s vs GMACs plot here (needs matplotlib)')
    args = p.parse_args(argv)
    if not args.model and not args.render:
        p.error('--model is required (or --render REPORT)')
    if args.jobs < 1:
        p.error(f'--jobs must be >= 1, got {args.jobs}')
    args.macs_rows = _macs_rows(args.macs_from)
    if args.render:
        return args
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available')
    return args


def main(argv=None):
    args = parse_args(argv)
    unknown = [m for m in args.model if not timm.is_model(m)]
    if unknown:
        close = sorted({c for m in unknown for c in timm.list_models(f"*{m.split('_')[0]}*")})
        raise SystemExit(f'--model: unknown model(s) {unknown}; registered models like them: {close[:12]}')
    if args.baseline and args.baseline not in (args.model or [r['model'] for r in
                                                             json.loads(args.render.read_text())['results']]):
        raise SystemExit(f'--baseline {args.baseline!r} must be one of the measured models')
    report = render(args) if args.render else run(args)
    table = to_markdown(report)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + '\n')
    if args.plot:
        plot(report, args.plot)


if __name__ == '__main__':
    main()
