"""Issue 18's speed curve from a ``benchmarks/sparsifiner_device.py`` result: sparsifiner_deit_small img/s against
the keep rate (1.0 / 0.5 / 0.25 / 0.1) at 224 and 384 px, next to dense DeiT-S at the same size, as a markdown
table and a plot (inference and train step side by side).

    python benchmarks/sparsifiner_curve.py benchmarks/results/h200_sparsifiner_fused.json \\
        --markdown benchmarks/results/h200_sparsifiner_curve.md --plot benchmarks/results/h200_sparsifiner_curve.png

The curve rows are the result's ``curve224`` / ``curve384`` groups: one dense ``deit_small_patch16_224`` row per
size and sparse rows keyed by (keep, attention backend); keep 1.0 skips the predictor and runs dense SDPA whatever
the backends. matplotlib is needed for ``--plot`` only (it is not a dependency of attnzoo).
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

KEEPS = (1.0, 0.5, 0.25, 0.1)
PASSES = (('inference', 'inference img/s'), ('train', 'train img/s'))
# The attention backend names a result records. Results written before the masked-SDPA variant was renamed
# 'torch' (h200_sparsifiner_fused.json) record it as 'auto', which then meant masked SDPA.
ATTENTION_NAMES = {'torch': 'masked SDPA', 'auto': 'masked SDPA', 'triton': 'bitmask kernels'}


def curve(rows: List[dict], size: int) -> Tuple[dict, Dict[Tuple[float, str], dict]]:
    """The dense row of ``size`` and the sparse rows keyed by (keep, attention name)."""
    group = [r for r in rows if r.get('group') == f'curve{size}']
    dense = [r for r in group if r['model'].startswith('deit_')]
    if len(dense) != 1:
        raise ValueError(f'curve{size}: expected one dense DeiT-S row, got {len(dense)}')
    sparse = {(r['keep'], ATTENTION_NAMES[r['backends'][1]]): r for r in group if 'keep' in r}
    return dense[0], sparse


def markdown(rows: List[dict], sizes: Tuple[int, ...]) -> str:
    """One table per size: img/s of each keep rate and attention backend, and its ratio to dense DeiT-S."""
    attentions = sorted({name for size in sizes for _, name in curve(rows, size)[1]})
    lines = []
    for size in sizes:
        dense, sparse = curve(rows, size)
        lines += [f'### {size} px ({(size // 16) ** 2 + 1} tokens)', '',
                  '| keep | attention | inference img/s | × DeiT-S | train img/s | × DeiT-S | train peak GiB |',
                  '|---|---|---|---|---|---|---|',
                  f"| dense DeiT-S | SDPA | {dense['inference']['img_s']:.0f} | 1.00 | {dense['train']['img_s']:.0f} "
                  f"| 1.00 | {dense['train']['peak_gib']:.2f} |"]
        for keep in KEEPS:
            for name in attentions:
                r = sparse.get((keep, name))
                if r is None:
                    continue
                label = 'dense SDPA (predictor skipped)' if keep == 1.0 else name
                cells = [f"{r[p]['img_s']:.0f} | {r[p]['img_s'] / dense[p]['img_s']:.2f}" for p, _ in PASSES]
                lines.append(f"| {keep} | {label} | {' | '.join(cells)} | {r['train']['peak_gib']:.2f} |")
        lines.append('')
    return '\n'.join(lines)


def plot(rows: List[dict], sizes: Tuple[int, ...], path: Path) -> None:
    """img/s against keep (falling to the right), one line per (size, attention), dense DeiT-S dashed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PASSES), figsize=(11, 5))
    colors = dict(zip(sizes, ('tab:blue', 'tab:orange', 'tab:green')))
    markers = {'masked SDPA': 's', 'bitmask kernels': 'o'}
    for ax, (p, title) in zip(axes, PASSES):
        for size in sizes:
            dense, sparse = curve(rows, size)
            ax.axhline(dense[p]['img_s'], color=colors[size], linestyle='--', linewidth=1,
                       label=f'dense DeiT-S {size} px')
            for name, marker in markers.items():
                points = sorted(((k, r[p]['img_s']) for (k, n), r in sparse.items() if n == name), reverse=True)
                if (1.0, 'masked SDPA') in sparse and (1.0, name) not in sparse:  # keep 1.0: dense either way
                    points = [(1.0, sparse[(1.0, 'masked SDPA')][p]['img_s'])] + points
                if points:
                    ax.plot(*zip(*points), marker=marker, color=colors[size], label=f'sparse {size} px, {name}')
        ax.set_xscale('log')
        ax.set_xticks(KEEPS, [str(k) for k in KEEPS])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_yscale('log')
        ax.set_xlabel('keep rate')
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc='lower center', ncol=3, fontsize=8)
    fig.suptitle('sparsifiner_deit_small against dense DeiT-S (fused predictor)', fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('result', type=Path, help='a sparsifiner_device.py JSON')
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 384])
    p.add_argument('--markdown', type=Path, help='write the tables here (else print them)')
    p.add_argument('--plot', type=Path, help='write the plot here (needs matplotlib)')
    args = p.parse_args()
    data = json.loads(args.result.read_text())
    sizes = tuple(args.sizes)
    head = (f"{data['device']}, torch {data['torch']}, bf16 autocast, eager, inference batch {data['args']['batch']}, "
            f"SGD train step batch {data['args']['train_batch']}; from `{args.result.name}`.\n\n")
    text = head + markdown(data['rows'], sizes)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    if args.plot:
        plot(data['rows'], sizes, args.plot)


if __name__ == '__main__':
    main()
