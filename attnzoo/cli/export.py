"""Export a registered model through ``torch.export`` (``.pt2``) or ONNX, re-run the file and check it.

::

    python tools/export.py --model dinat_tiny --format onnx --dynamic-batch --check
    python tools/export.py --model dlgsanet_tiny_x4 --input-size 3 48 64 --dynamic-batch --dynamic-hw --no-tlc

The model (``--checkpoint``: weights read tensors-only by :func:`attnzoo.utils.checkpoint.load_checkpoint`, mapped
by the family's ``checkpoint_filter_fn`` and loaded strictly) is exported in eval mode by
``torch.export.export(strict=False)``; ONNX goes through ``torch.onnx.export(dynamo=True)``, which converts that
same program. While exporting, every attention op takes its pure-PyTorch path (:func:`attnzoo.ops._dispatch.exporting`),
so the file holds SDPA, gathers and convolutions only. The written file is loaded again (``torch.export.load``, or an
ONNX Runtime CPU session) and run on a new random input, at another batch size when the batch is dynamic; the
largest absolute and relative errors against eager PyTorch and both median latencies are printed.

Dynamic dimensions (``--dynamic-batch``, ``--dynamic-hw``): the batch can be dynamic for every family; height and
width for :data:`DYNAMIC_HW_FAMILIES` (DLGSANet with TLC off); for the others ``--dynamic-hw`` is an
:class:`ExportShapeError` giving the reason (:data:`FIXED_HW_REASONS`): export one file per input size. A dimension the
model's code specialises raises :class:`ExportShapeError` naming it and the family.

TorchScript (``torch.jit.script``) is not supported by any family (the ops use Python features TorchScript lacks:
cached plans, context managers, f-strings, keyword-only arguments); ``torch.export`` is the supported path.

The timing and tensor comparison are written here: the ORT session and the exported program are no ``nn.Module``
that ``attnzoo.utils.timing`` or ``torch.testing`` helpers would run and report as the table needs (one number each).
"""
import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
from torch.export import Dim

from attnzoo.utils.timing import median_ms

__all__ = ['ExportShapeError', 'DYNAMIC_HW_FAMILIES', 'FIXED_HW_REASONS', 'family_of', 'dynamic_shapes',
           'export_program', 'export_onnx', 'check_file', 'ExportCheck', 'build_model', 'main']

# Height and width can be dynamic for these families only; every other family exports at one size per file and
# names why in :data:`FIXED_HW_REASONS` (the batch is dynamic for all).
DYNAMIC_HW_FAMILIES = ('dlgsanet',)
FIXED_HW_REASONS = {
    'nat': "the neighborhood-attention tile plan is Python arithmetic on the map size (torch.export's shape solver "
           'fails on it)',
    'biformer': 'the region grid of every stage is fixed from the map size (guards such as "padded height == 56" '
                'remain after the padding is made unconditional)',
    'l2vit': "the window partition's padding is Python arithmetic on the map size (torch.export does not finish "
             'solving its guards)',
    'favit': 'the padding of its factorized key windows is Python arithmetic on the map size (guards on it remain)',
    'sparsifiner': 'a ViT with a position embedding and a token budget of one size',
}
FORMATS = ('pt2', 'onnx')
MAX_BATCH = 1024
MAX_SIDE = 4096
ONNX_OPSET = 18


class ExportShapeError(ValueError):
    """A dimension asked to be dynamic is one the model's code fixes (or the family cannot take)."""


class ExportCheck(NamedTuple):
    """The exported file run against eager PyTorch on one input."""
    max_abs_error: float
    max_rel_error: float
    eager_ms: float
    exported_ms: float
    input_shape: Tuple[int, ...]


def family_of(model: torch.nn.Module) -> str:
    """The attnzoo family (its model module, e.g. ``'nat'`` for NAT and DiNAT) of a model from ``create_model``."""
    return type(model).__module__.rsplit('.', 1)[-1]


def dynamic_shapes(model: torch.nn.Module, dynamic_batch: bool, dynamic_hw: bool) -> Optional[Tuple[Dict]]:
    """``dynamic_shapes`` for ``torch.export`` of ``model(x)`` with ``x`` ``[B, C, H, W]`` (None: all static).

    Raises:
        ExportShapeError: ``dynamic_hw`` for a family outside :data:`DYNAMIC_HW_FAMILIES` (the reason from
            :data:`FIXED_HW_REASONS`), or for a DLGSANet whose
            TLC windows are on (their grid is Python arithmetic on the size: ``model.set_tlc(False)``).
    """
    family = family_of(model)
    if dynamic_hw and family not in DYNAMIC_HW_FAMILIES:
        raise ExportShapeError(f'dynamic_hw: the {family} family exports at one input size: '
                               f'{FIXED_HW_REASONS.get(family, "not an attnzoo family")}; families with a dynamic '
                               f'H/W: {DYNAMIC_HW_FAMILIES}')
    if dynamic_hw and family == 'dlgsanet' and any(getattr(m, 'tlc', False) for m in model.modules()):
        raise ExportShapeError('dynamic_hw: DLGSANet with TLC on lays its window grid out from the image size in '
                               'Python, so it exports at one size; export with model.set_tlc(False) (--no-tlc: '
                               'global SparseGSA, the training-mode attention) or without dynamic_hw')
    dims = {}
    if dynamic_batch:
        dims[0] = Dim('batch', min=1, max=MAX_BATCH)
    if dynamic_hw:
        dims[2], dims[3] = Dim('height', min=1, max=MAX_SIDE), Dim('width', min=1, max=MAX_SIDE)
    return ({**dims},) if dims else None


def _shape_error(model: torch.nn.Module, err: Exception) -> ExportShapeError:
    first = str(err).strip().splitlines()
    reason = '\n'.join(line for line in first[:6] if line.strip())
    return ExportShapeError(f'{family_of(model)}: a dimension asked to be dynamic is fixed by the model code:\n'
                            f'{reason}')


def export_program(model: torch.nn.Module, x: torch.Tensor,
                   dims: Optional[Tuple[Dict]]) -> torch.export.ExportedProgram:
    """``torch.export.export(model, (x,), strict=False)`` with ``dims``; a violated dynamic dim is an
    ExportShapeError."""
    try:
        return torch.export.export(model, (x,), dynamic_shapes=dims, strict=False)
    except torch._dynamo.exc.UserError as err:
        raise _shape_error(model, err) from err


def export_onnx(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write ``program`` as ONNX (opset :data:`ONNX_OPSET`) to ``path``, dynamic dims kept."""
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=ONNX_OPSET, verbose=False)
    onnx_program.save(str(path))


def _runner(path: Path, fmt: str) -> Callable[[torch.Tensor], List[np.ndarray]]:
    """A function running the written file on an input, returning its outputs as numpy arrays."""
    if fmt == 'pt2':
        module = torch.export.load(str(path)).module()

        return lambda x: _flat(module(x))
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def _flat(out) -> List[np.ndarray]:
    """A model's output (a tensor, or features_only's list of maps) as numpy arrays."""
    return [t.detach().numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]


def _errors(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Largest absolute error and largest error relative to each output's largest magnitude."""
    if len(ref) != len(got) or any(r.shape != g.shape for r, g in zip(ref, got)):
        raise RuntimeError(f'exported outputs {[g.shape for g in got]} differ in shape from eager '
                           f'{[r.shape for r in ref]}')
    abs_err = max(float(np.abs(r - g).max(initial=0)) for r, g in zip(ref, got))
    rel_err = max(float(np.abs(r - g).max(initial=0) / max(np.abs(r).max(initial=0), 1e-12))
                  for r, g in zip(ref, got))
    return abs_err, rel_err


def check_file(model: torch.nn.Module, path: Path, fmt: str, x: torch.Tensor, steps: int = 5) -> ExportCheck:
    """Run the file at ``path`` (format ``fmt``) and eager ``model`` on ``x``: errors and median latencies."""
    run = _runner(path, fmt)
    with torch.no_grad():
        ref = _flat(model(x))
        got = run(x)
        abs_err, rel_err = _errors(ref, got)
        cpu = torch.device('cpu')
        eager_ms = median_ms(lambda: model(x), steps, 1, cpu)
        exported_ms = median_ms(lambda: run(x), steps, 1, cpu)
    return ExportCheck(abs_err, rel_err, eager_ms, exported_ms, tuple(x.shape))


def build_model(name: str, checkpoint: Optional[str], trusted: bool, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, **kwargs)`` in eval mode, with the weights of ``checkpoint`` loaded strictly."""
    import attnzoo  # noqa: F401  (registers the models)
    from attnzoo.models._base import unwrap_state_dict
    from attnzoo.utils.checkpoint import load_checkpoint, load_state_dict_strict
    model = timm.create_model(name, **kwargs)
    if checkpoint:
        state = unwrap_state_dict(load_checkpoint(checkpoint, trusted=trusted),
                                  ('state_dict', 'model', 'params_ema', 'params'))
        filter_fn = getattr(sys.modules[type(model).__module__], 'checkpoint_filter_fn', None)
        load_state_dict_strict(model, filter_fn(state, model) if filter_fn else state, checkpoint)
    return model.eval()


def _positive(name: str, value: int, top: int) -> int:
    if not 1 <= value <= top:
        raise SystemExit(f'{name} must be in [1, {top}], got {value}')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', required=True, help='registered model name (timm.list_models)')
    p.add_argument('--checkpoint', help='weights to load (.safetensors / .pth, tensors-only unless --trust-checkpoint)')
    p.add_argument('--trust-checkpoint', action='store_true', help='fully unpickle --checkpoint (runs its code)')
    p.add_argument('--format', choices=FORMATS, default='onnx')
    p.add_argument('--input-size', type=int, nargs=3, metavar=('C', 'H', 'W'),
                   help="input [C, H, W]; default the model's pretrained_cfg input_size")
    p.add_argument('--batch-size', type=int, default=1, help='batch of the example input (default 1)')
    p.add_argument('--dynamic-batch', action='store_true', help='export with a dynamic batch dimension')
    p.add_argument('--dynamic-hw', action='store_true', help=f'dynamic height and width: {DYNAMIC_HW_FAMILIES}')
    p.add_argument('--no-tlc', action='store_true', help='DLGSANet: global SparseGSA instead of TLC windows')
    p.add_argument('--features-only', action='store_true', help='export the backbone (a list of NCHW maps)')
    p.add_argument('--check', action='store_true', help='re-run the file against eager and print errors, latency')
    p.add_argument('--out', type=Path, help='output file (default <model>.<format> in the current folder)')
    args = p.parse_args(argv)
    _positive('--batch-size', args.batch_size, MAX_BATCH)
    for side in args.input_size or ():
        _positive('--input-size', side, MAX_SIDE)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    kwargs = {'features_only': True} if args.features_only else {}
    try:
        model = build_model(args.model, args.checkpoint, args.trust_checkpoint, **kwargs)
    except RuntimeError as err:  # timm: unknown model
        raise SystemExit(f'--model: {err}')
    if args.no_tlc:
        if family_of(model) != 'dlgsanet':
            raise SystemExit('--no-tlc is for DLGSANet models only')
        model.set_tlc(False)
    size = tuple(args.input_size or model.pretrained_cfg['input_size'])
    # torch.export specialises a dim whose example size is 1: a dynamic batch is traced at 2 at least
    x = torch.randn(max(args.batch_size, 2) if args.dynamic_batch else args.batch_size, *size)
    out = args.out or Path(f'{args.model}.{args.format}')
    try:
        dims = dynamic_shapes(model, args.dynamic_batch, args.dynamic_hw)
        t0 = time.perf_counter()
        program = export_program(model, x, dims)
    except ExportShapeError as err:
        raise SystemExit(str(err))
    if args.format == 'pt2':
        torch.export.save(program, str(out))
    else:
        export_onnx(program, out)
    print(f'{out}: {args.format}, input {list(x.shape)}, dynamic {sorted(dims[0]) if dims else []}, '
          f'{time.perf_counter() - t0:.1f} s, {os.path.getsize(out) / 2 ** 20:.1f} MiB')
    if args.check:
        batch = x.shape[0] + 1 if args.dynamic_batch else x.shape[0]
        result = check_file(model, out, args.format, torch.randn(batch, *size))
        print(f'check on {list(result.input_shape)}: max abs error {result.max_abs_error:.3g}, max rel error '
              f'{result.max_rel_error:.3g}; latency eager {result.eager_ms:.2f} ms, '
              f'{args.format} {result.exported_ms:.2f} ms')


if __name__ == '__main__':
    main()
