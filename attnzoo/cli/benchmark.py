"""Benchmark models side by side: params, MACs, throughput, latency and peak memory.

Any timm model name works (attnzoo's are registered on import), so peers are measured in the
same run as ours::

    python tools/benchmark.py --model dinat_tiny nat_tiny swin_tiny_patch4_window7_224 \\
        --device cuda --amp bf16 --batch-size 256 --train-batch-size 128 --json out.json

``--mode eager|compile|cudagraph`` runs the model as it is, ``torch.compile``d with static shapes, or compiled
with ``mode='reduce-overhead'`` (CUDA graphs: forward and backward replayed without the host); every model of a run
uses the same mode, so ``--baseline`` ratios compare peers measured the same way in the same run (computed from the
measured times, not the rounded img/s).

Each (model, pass) runs in a fresh subprocess so peak memory belongs to it alone (with
``--inference-then-train`` one process per model runs both, in that order): on CUDA the
allocator's peak (``max_memory_allocated``), on CPU the growth of the process's peak resident set
over its size after the model and inputs were created. Times are medians over ``--steps`` timed
iterations after ``--warmup`` (CUDA timed with events). A line is printed as each measurement
finishes; one whose process dies or outlives ``--timeout`` reports the failure in its row.
MACs follow the papers' convention (fvcore plus the nominal MACs of attnzoo's attention ops) at batch 1.
"""
import argparse
import contextlib
import json
import multiprocessing as mp
import queue as queue_lib
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import timm
import torch

import attnzoo  # noqa: F401  (registers attnzoo's models)
from attnzoo.utils.flops import count_macs, count_params
from attnzoo.utils.machine import machine_name
from attnzoo.utils.timing import median_ms

DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = {'eager': None, 'compile': None, 'cudagraph': 'reduce-overhead'}  # --mode -> torch.compile mode
POLL_S = 1.0  # how often a parent waiting for a child checks that it is still alive


def _rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(name: str, device: torch.device, channels_last: bool, mode: str):
    """``(model to run, the plain model)``. ``compile`` and ``cudagraph`` compile with static shapes
    (``dynamic=False``): a second input shape (the train batch after the inference batch) is compiled for that shape
    too, as a fresh compile would be, instead of switching the model to a dynamic-shape graph."""
    model = timm.create_model(name, pretrained=False).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode == 'eager':
        return model, model
    return torch.compile(model, mode=COMPILE_MODES[mode], dynamic=False), model


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == 'sgd':
        return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=1e-4)


def _step(pass_: str, model, plain, x: torch.Tensor, spec: dict, optimizer: torch.optim.Optimizer):
    """One inference pass (``model.eval()``, no gradients) or one train step (``model.train()``, loss, backward,
    optimizer step) on ``x``; under ``cudagraph`` each starts a new CUDA-graph generation (the previous step's
    outputs are dead)."""
    device, amp = x.device, DTYPES[spec['amp']]
    begin = torch.compiler.cudagraph_mark_step_begin if spec['mode'] == 'cudagraph' else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()

    if pass_ == 'inference':
        model.eval()

        def step():
            begin()
            with torch.no_grad(), autocast():
                model(x)
        return step
    model.train()
    target = torch.randint(0, plain.num_classes, (x.shape[0],), device=device)

    def step():
        begin()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _prepare(spec: dict):
    """Build one measurement's model (once for all its passes) and warm up its first pass (which compiles, in the
    compiled modes).

    Returns ``timed()``, which times ``spec['steps']`` steps of each pass in ``spec['passes']`` (``[[pass,
    batch], ..]``, in that order, warming up the later ones first) and returns ``{pass: result row}``."""
    torch.manual_seed(0)
    device = torch.device(spec['device'])
    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    model, plain = _build(spec['model'], device, spec['channels_last'], spec['mode'])
    size = spec['img_size'] or plain.pretrained_cfg['input_size'][-1]
    optimizer = _optimizer(spec['optimizer'], plain)

    def warm_up(pass_: str, batch: int):
        x = torch.randn(batch, 3, size, size, device=device)
        if spec['channels_last']:
            x = x.contiguous(memory_format=torch.channels_last)
        step = _step(pass_, model, plain, x, spec, optimizer)
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base_rss = _rss_mb()
        for _ in range(spec['warmup']):
            step()

        def timed_pass() -> dict:
            ms = median_ms(step, spec['steps'], 1, device)  # one more warm-up step: --jobs may have paused us
            peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == 'cuda'
                    else max(0.0, _peak_rss_mb() - base_rss))
            return dict(ms_per_batch=round(ms, 4), img_per_s=round(batch * 1e3 / ms, 1),
                        peak_mem_mb=round(peak, 1), batch_size=batch, img_size=size)
        return timed_pass

    first = warm_up(*spec['passes'][0])

    def timed() -> dict:
        rows = {}
        for i, (pass_, batch) in enumerate(spec['passes']):
            rows[pass_] = (first if i == 0 else warm_up(pass_, batch))()
        return rows
    return timed


def _measure(spec: dict) -> dict:
    """One measurement (every pass of ``spec``); runs inside its own process."""
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


def _receive(proc, queue, timeout_s: float) -> tuple:
    """The next ``(status, value)`` message of child ``proc``; ``('error', why)`` when it exits without one or
    sends none within ``timeout_s`` seconds (then it is killed): a crashed or hung child fails its row, it never
    leaves this process waiting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return queue.get(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
        except queue_lib.Empty:
            pass
        if not proc.is_alive():
            try:  # a message sent just before the exit may still be in the pipe
                return queue.get(timeout=POLL_S)
            except queue_lib.Empty:
                return 'error', f'the measuring process exited with code {proc.exitcode} and sent no result'
        if time.monotonic() >= deadline:
            proc.kill()
            proc.join()
            return 'error', f'no result within --timeout {timeout_s:g} s: the measuring process was killed'


def _in_subprocess(fn, spec, timeout_s: float) -> dict:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(fn, spec, queue))
    proc.start()
    status, value = _receive(proc, queue, timeout_s)
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


def _in_staged_subprocesses(specs: List[dict], jobs: int, timeout_s: float, report: Callable) -> List[dict]:
    """Run ``specs`` in processes, ``jobs`` at a time: each group prepares concurrently (in the compiled modes the
    minutes of compilation overlap), then its members are timed one after another, when no process of the group
    is still preparing, so no timed loop shares the device with other work. ``report(spec, result)`` is called as
    each finishes; ``timeout_s`` bounds each member's preparation and its timing."""
    ctx = mp.get_context('spawn')
    results = []
    for first in range(0, len(specs), jobs):
        group = []
        for spec in specs[first:first + jobs]:
            queue, go = ctx.Queue(), ctx.Event()
            proc = ctx.Process(target=_staged_worker, args=(spec, queue, go))
            proc.start()
            group.append((spec, proc, queue, go))
        states = [_receive(proc, queue, timeout_s) for _, proc, queue, _ in group]  # every member ready or failed
        for (spec, proc, queue, go), (status, value) in zip(group, states):
            if status == 'ready':
                go.set()
                status, value = _receive(proc, queue, timeout_s)
            proc.join()
            results.append(value if status == 'ok' else {'error': value})
            report(spec, results[-1])
    return results


def _progress(total: int) -> Callable:
    """``report(spec, result)`` printing one line per finished measurement, ``[i/total] model pass: ...``."""
    done = [0]

    def report(spec: dict, result: dict) -> None:
        done[0] += 1
        for pass_, _ in spec['passes']:
            row = result.get(pass_, result)
            text = (f"error: {row['error']}" if 'error' in row else
                    f"{row['img_per_s']} img/s, {row['ms_per_batch']} ms/batch of {row['batch_size']}, "
                    f"peak {row['peak_mem_mb']} MiB")
            print(f"[{done[0]}/{total}] {spec['model']} {pass_} ({spec['mode']}): {text}", flush=True)
    return report


def run(args) -> dict:
    results, specs, owners = [], [], []  # owners[i]: the row that measurement specs[i] fills
    for name in args.model:
        row = {'model': name}
        base = dict(model=name, device=args.device, img_size=args.img_size, amp=args.amp, steps=args.steps,
                    warmup=args.warmup, channels_last=args.channels_last, mode=args.mode, threads=args.threads,
                    optimizer=args.optimizer)
        if name in args.macs_rows:
            row.update(args.macs_rows[name])
        elif not args.no_macs:
            row.update(_in_subprocess(_macs, base, args.timeout))
        passes = [[p, args.batch_size if p == 'inference' else (args.train_batch_size or args.batch_size)]
                  for p in (['inference', 'train'] if args.bench == 'both' else [args.bench])]
        for group in ([passes] if args.inference_then_train else [[p] for p in passes]):
            specs.append(dict(base, passes=group))
            owners.append(row)
        results.append(row)
    report = _progress(len(specs))
    if args.jobs > 1:
        measured = _in_staged_subprocesses(specs, args.jobs, args.timeout, report)
    else:
        measured = []
        for spec in specs:
            measured.append(_in_subprocess(_measure, spec, args.timeout))
            report(spec, measured[-1])
    for spec, row, res in zip(specs, owners, measured):
        for pass_, _ in spec['passes']:
            row.update({f'{pass_}_{k}': v for k, v in res.get(pass_, res).items()})
    for row in results:
        print(json.dumps(row), flush=True)
    machine = machine_name(args.device, args.threads)
    if args.baseline:
        _add_ratios(results, args.baseline)
    return dict(machine=machine, device=args.device, torch=torch.__version__, timm=timm.__version__,
                amp=args.amp, channels_last=args.channels_last, mode=args.mode, optimizer=args.optimizer,
                inference_then_train=args.inference_then_train, baseline=args.baseline,
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


def _throughput_ratio(row: dict, base: dict, pass_: str) -> Optional[float]:
    """``row``'s img/s of ``pass_`` over ``base``'s, from the measured times and batches (not the rounded img/s)."""
    keys = (f'{pass_}_ms_per_batch', f'{pass_}_batch_size')
    if not all(k in r for r in (row, base) for k in keys):
        return None
    (ms, batch), (base_ms, base_batch) = ([r[k] for k in keys] for r in (row, base))
    return round(batch * base_ms / (ms * base_batch), 3)


def _add_ratios(results: list, baseline: str) -> None:
    """Same-run ratios to the baseline row: throughput (higher is better) and train peak memory (lower is better)."""
    base = next(r for r in results if r['model'] == baseline)
    for r in results:
        for pass_ in ('inference', 'train'):
            ratio = _throughput_ratio(r, base, pass_)
            if ratio is not None:
                r[f'{pass_}_vs_baseline'] = ratio
        if 'train_peak_mem_mb' in r and base.get('train_peak_mem_mb'):
            r['train_peak_vs_baseline'] = round(r['train_peak_mem_mb'] / base['train_peak_mem_mb'], 3)


def to_markdown(report: dict) -> str:
    cols = ['model', 'params_m', 'gmacs', 'inference_img_per_s', 'inference_vs_baseline', 'inference_ms_per_batch',
            'inference_peak_mem_mb', 'train_img_per_s', 'train_vs_baseline', 'train_peak_mem_mb',
            'train_peak_vs_baseline']
    cols = [c for c in cols if any(c in r for r in report['results'])]
    baseline = f", ratios to {report['baseline']} (same run)" if report.get('baseline') else ''
    mode = report.get('mode', 'compile' if report.get('compile') else 'eager')  # reports before --mode: compile
    lines = [f"machine: {report['machine']}, torch {report['torch']}, amp {report['amp']}, "
             f"mode {mode}, channels_last {report['channels_last']}{baseline}",
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
    p.add_argument('--mode', default='eager', choices=list(COMPILE_MODES),
                   help="eager; compile: torch.compile(model, dynamic=False); cudagraph: the same with "
                   "mode='reduce-overhead' (CUDA graphs; --device cuda)")
    p.add_argument('--compile', action='store_true', help='same as --mode compile')
    p.add_argument('--optimizer', default='adamw', choices=['adamw', 'sgd'], help='of the train step')
    p.add_argument('--inference-then-train', action='store_true',
                   help='with --bench both: one process per model times inference, then model.train() and the '
                   'train step, on the same (compiled) model: the order of a user who evaluates before '
                   'fine-tuning (default: a fresh process per pass)')
    p.add_argument('--timeout', type=float, default=1800.,
                   help='seconds a measurement may take (build, compile, warm-up, timing) before its process is '
                   'killed and its row reports the failure')
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
    if args.timeout <= 0:
        p.error(f'--timeout must be > 0 seconds, got {args.timeout:g}')
    if args.compile:
        if args.mode not in ('eager', 'compile'):
            p.error(f'--compile is --mode compile; it contradicts --mode {args.mode}')
        args.mode = 'compile'
    if args.inference_then_train and args.bench != 'both':
        p.error(f'--inference-then-train needs --bench both, got --bench {args.bench}')
    args.macs_rows = _macs_rows(args.macs_from)
    if args.render:
        return args
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available')
    if args.mode == 'cudagraph' and args.device != 'cuda':
        p.error(f'--mode cudagraph needs --device cuda, got --device {args.device}')
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
