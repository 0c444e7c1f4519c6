"""Check attnzoo's MAC counter against fvcore, model by model (the papers' tables use fvcore's counts).

    pip install fvcore   # not a dependency of attnzoo; only this check uses it
    python benchmarks/mac_counter_check.py nat_mini biformer_tiny ...   # default: every registered attnzoo model

For each model at its pretrained input size (batch 1, eval) it prints fvcore's ``FlopCountAnalysis`` total and
``attnzoo.utils.flops.layer_macs`` (the same op table applied through a ``TorchFunctionMode``), with the attention
ops' own counter active in both, so the attention term is left out of both, and the time each took.
Result of 2026-12-04 (29 models, all equal): results/cpu_mac_counter_vs_fvcore.txt.
"""
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

import attnzoo  # noqa: E402,F401
from attnzoo.ops import count_attention_macs  # noqa: E402
from attnzoo.utils.flops import _example_input, layer_macs  # noqa: E402

FAMILIES = ('nat', 'biformer', 'favit', 'l2vit', 'sparsifiner', 'dlgsanet')


def fvcore_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from fvcore.nn import FlopCountAnalysis
    logging.getLogger('fvcore').setLevel(logging.ERROR)
    with torch.no_grad(), count_attention_macs():
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
        return int(analysis.total())


def main(names):
    names = names or sorted(n for n in timm.list_models()
                            if timm.models._registry._model_to_module.get(n) in FAMILIES)
    for name in names:
        model = timm.create_model(name).eval()
        x = _example_input(model, model.pretrained_cfg['input_size'])
        t0 = time.perf_counter()
        reference = fvcore_macs(model, x)
        t1 = time.perf_counter()
        ours = layer_macs(model, x)
        t2 = time.perf_counter()
        print(f'{name:28s} fvcore {reference} attnzoo {ours} diff {ours - reference:+d}  '
              f'time {t1 - t0:.1f}s / {t2 - t1:.1f}s', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
