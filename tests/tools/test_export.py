"""Export (issue 22): one small model per family through torch.export and ONNX (ONNX Runtime), a dynamic batch for
every one, dynamic H/W, features_only, the named shape errors and the command line."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.cli import export as E

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

# (name, narrow/shallow overrides, input size): each family's attention path at small cost
CASES = [
    ('dinat_mini', dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.), (64, 64)),
    ('biformer_tiny', dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1)), (224, 224)),
    ('l2vit_tiny', dict(depths=(1, 1, 2, 1)), (128, 128)),
    ('favit_b0', dict(), (128, 128)),
    ('sparsifiner_deit_tiny', dict(depth=2), (224, 224)),
    ('dlgsanet_tiny_x2', dict(), (24, 32)),
]
IDS = [c[0] for c in CASES]
RTOL = 1e-4  # the bound: ORT within 1e-4 relative of eager, fp32


def _model(name, kwargs, **extra):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs, **extra).eval()


def _assert_matches(model, run, x):
    with torch.no_grad():
        ref = E._flat(model(x))
    got = run(x)
    _, rel = E._errors(ref, got)
    assert rel <= RTOL, rel


@pytest.mark.parametrize('name,kwargs,size', CASES, ids=IDS)
def test_torch_export_with_dynamic_batch_matches_eager(name, kwargs, size):
    """A fresh model exports with a dynamic batch; the program run at another batch matches eager."""
    model = _model(name, kwargs)
    program = E.export_program(model, torch.randn(2, 3, *size), E.dynamic_shapes(model, True, False))
    module = program.module()
    _assert_matches(model, lambda x: E._flat(module(x)), torch.randn(3, 3, *size))


@pytest.mark.slow
@pytest.mark.parametrize('name,kwargs,size', CASES, ids=IDS)
def test_onnx_runtime_with_dynamic_batch_matches_eager(name, kwargs, size, tmp_path):
    """ONNX (dynamo exporter) with a dynamic batch, run by ONNX Runtime at batch 3 (DLGSANet's batch used to be
    specialised: ORT rejected another batch)."""
    model = _model(name, kwargs)
    program = E.export_program(model, torch.randn(2, 3, *size), E.dynamic_shapes(model, True, False))
    path = tmp_path / f'{name}.onnx'
    E.export_onnx(program, path)
    _assert_matches(model, E._runner(path, 'onnx'), torch.randn(3, 3, *size))


def test_onnx_of_dinat_runs_in_onnx_runtime(tmp_path):
    """The neighborhood-attention path (the issue's FX decomposition error) converts to ONNX and ORT matches eager,
    and the eager model still returns real tensors afterwards."""
    name, kwargs, size = CASES[0]
    model = _model(name, kwargs)
    x = torch.randn(1, 3, *size)
    path = tmp_path / 'dinat.onnx'
    E.export_onnx(E.export_program(model, x, None), path)
    _assert_matches(model, E._runner(path, 'onnx'), x)
    with torch.no_grad():
        assert type(model(x)) is torch.Tensor


@pytest.mark.slow
def test_features_only_backbone_exports_a_list_of_maps(tmp_path):
    """features_only=True: the exported program and ORT return the same NCHW maps as eager."""
    name, kwargs, size = CASES[0]
    model = _model(name, kwargs, features_only=True)
    x = torch.randn(2, 3, *size)
    program = E.export_program(model, x, E.dynamic_shapes(model, True, False))
    maps = program.module()(x)
    assert len(maps) == len(model.feature_info.channels())
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    path = tmp_path / 'features.onnx'
    E.export_onnx(program, path)
    _assert_matches(model, E._runner(path, 'onnx'), torch.randn(3, 3, *size))


@pytest.mark.slow
def test_dlgsanet_dynamic_height_and_width_without_tlc(tmp_path):
    """DLGSANet with TLC off exports with dynamic B, H, W; ORT runs another batch and another size."""
    model = _model('dlgsanet_tiny_x2', {})
    model.set_tlc(False)
    program = E.export_program(model, torch.randn(2, 3, 24, 32), E.dynamic_shapes(model, True, True))
    path = tmp_path / 'sr.onnx'
    E.export_onnx(program, path)
    _assert_matches(model, E._runner(path, 'onnx'), torch.randn(3, 3, 20, 36))


def test_dimensions_that_cannot_be_dynamic_are_named_errors():
    favit = _model('favit_b0', {})
    with pytest.raises(E.ExportShapeError, match='dynamic_hw: the favit family exports at one input size'):
        E.dynamic_shapes(favit, True, True)
    with pytest.raises(E.ExportShapeError, match='set_tlc'):
        E.dynamic_shapes(_model('dlgsanet_tiny_x2', {}), False, True)


@pytest.mark.slow
def test_command_line_writes_checks_and_reports(tmp_path, capsys):
    """tools/export.py: pt2 with a dynamic batch, re-run at another batch, errors and latency printed."""
    out = tmp_path / 'sr.pt2'
    E.main(['--model', 'dlgsanet_tiny_x2', '--format', 'pt2', '--input-size', '3', '16', '16', '--dynamic-batch',
            '--check', '--out', str(out)])
    printed = capsys.readouterr().out
    assert out.is_file()
    assert 'check on [3, 3, 16, 16]' in printed and 'latency eager' in printed
    error = float(printed.split('max rel error ')[1].split(';')[0])
    assert error <= RTOL


def test_command_line_rejects_bad_arguments():
    with pytest.raises(SystemExit, match=r'--batch-size must be in \[1, 1024\]'):
        E.parse_args(['--model', 'favit_b0', '--batch-size', '0'])
    with pytest.raises(SystemExit, match='--no-tlc is for DLGSANet'):
        E.main(['--model', 'favit_b0', '--no-tlc'])
