"""tools/convert_weights.py on an official-format fixture, and tools/benchmark.py end to end."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import attnzoo  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT.parent / 'shared' / 'parity'


def _load_tool(name):
    return importlib.import_module(f'attnzoo.cli.{name}')  # tools/<name>.py runs its main


NAT_REDUCED = ['embed_dim=16', 'depths=[2,2,2,2]', 'num_heads=[1,2,4,8]', 'mlp_ratio=3']


@pytest.mark.skipif(not (PARITY / 'nat_reduced.pt').exists(), reason='needs ../shared/parity (official fixtures)')
def test_convert_official_fixture_then_load_as_pretrained(tmp_path):
    fixture = torch.load(PARITY / 'nat_reduced.pt', weights_only=False)
    src, out = tmp_path / 'official.pth', tmp_path / 'ours.pth'
    torch.save(fixture['state_dict'], src)
    tool = _load_tool('convert_weights')
    tool.main(['--model', 'nat_mini', '--src', str(src), '--out', str(out), '--model-kwargs', *NAT_REDUCED])
    kwargs = tool.parse_kwargs(NAT_REDUCED)
    model = timm.create_model('nat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), **kwargs)
    x, expected = fixture['inputs'][-1], fixture['outputs'][-1]  # 96x128: the padded path
    with torch.no_grad():
        got = model.eval()(x)
    assert (got - expected).abs().max().item() <= fixture['atol_suggested_float32']


def test_convert_rejects_unknown_model_and_unmapped_keys(tmp_path):
    tool = _load_tool('convert_weights')
    src = tmp_path / 'bad.pth'
    torch.save({'not_a_key.weight': torch.zeros(1)}, src)
    with pytest.raises(SystemExit, match='unknown model'):
        tool.main(['--model', 'dinat_tinyy', '--src', str(src), '--out', str(tmp_path / 'o.pth')])
    with pytest.raises((SystemExit, ValueError), match='not_a_key'):
        tool.main(['--model', 'nat_mini', '--src', str(src), '--out', str(tmp_path / 'o.pth')])
    with pytest.raises(SystemExit, match='no such file'):
        tool.main(['--model', 'nat_mini', '--src', str(tmp_path / 'missing.pth'), '--out', str(tmp_path / 'o.pth')])


def test_benchmark_reports_every_field(tmp_path):
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--model', 'dinat_mini', '--device', 'cpu',
                    '--batch-size', '1', '--img-size', '64', '--steps', '1', '--warmup', '1', '--json', str(out)],
                   check=True, cwd=tmp_path)
    report = json.loads(out.read_text())
    row = report['results'][0]
    assert report['device'] == 'cpu' and row['model'] == 'dinat_mini'
    for key in ('params_m', 'gmacs', 'inference_img_per_s', 'inference_peak_mem_mb', 'train_img_per_s',
                'train_peak_mem_mb'):
        assert isinstance(row[key], (int, float)) and row[key] >= 0, key
    assert abs(row['params_m'] - 19.98) < 0.1


def test_benchmark_render_adds_macs_and_baseline_ratios(tmp_path):
    """--render re-renders a saved (e.g. GPU) report: params / GMACs from --macs-from, ratios to --baseline."""
    benchmark = _load_tool('benchmark')
    # ratios from the times: a's train img/s is 0.3448, b's 0.2564, both rounded to 0.3 in the rows
    measured = {'machine': 'gpu', 'device': 'cuda', 'torch': 'x', 'amp': 'bf16', 'compile': False,
                'channels_last': True, 'results': [
                    {'model': 'a', 'inference_img_per_s': 300.0, 'inference_ms_per_batch': 10.0,
                     'inference_batch_size': 3, 'train_img_per_s': 0.3, 'train_ms_per_batch': 2900.0,
                     'train_batch_size': 1, 'train_peak_mem_mb': 900.0},
                    {'model': 'b', 'inference_img_per_s': 200.0, 'inference_ms_per_batch': 20.0,
                     'inference_batch_size': 4, 'train_img_per_s': 0.3, 'train_ms_per_batch': 3900.0,
                     'train_batch_size': 1, 'train_peak_mem_mb': 600.0}]}
    macs = {'results': [{'model': 'a', 'params_m': 1.5, 'gmacs': 2.0, 'macs_img_size': 224},
                        {'model': 'b', 'params_m': 3.0, 'gmacs': 4.0, 'macs_img_size': 224}]}
    (tmp_path / 'gpu.json').write_text(json.dumps(measured))
    (tmp_path / 'cpu.json').write_text(json.dumps(macs))
    out, md = tmp_path / 'out.json', tmp_path / 'out.md'
    benchmark.main(['--render', str(tmp_path / 'gpu.json'), '--macs-from', str(tmp_path / 'cpu.json'),
                    '--baseline', 'b', '--json', str(out), '--markdown', str(md)])
    rows = {r['model']: r for r in json.loads(out.read_text())['results']}
    assert rows['a']['gmacs'] == 2.0 and rows['b']['params_m'] == 3.0
    assert rows['a']['inference_vs_baseline'] == 1.5 and rows['a']['train_vs_baseline'] == round(3900 / 2900, 3)
    assert rows['a']['train_peak_vs_baseline'] == 1.5 and rows['b']['inference_vs_baseline'] == 1.0
    assert 'ratios to b' in md.read_text() and 'mode eager' in md.read_text()
    with pytest.raises(SystemExit, match='--baseline'):
        benchmark.main(['--render', str(tmp_path / 'gpu.json'), '--baseline', 'c'])


def _load_benchmark_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_models_sr_reports_latency(tmp_path):
    tool = _load_benchmark_script('task_models')
    out = tmp_path / 'sr.json'
    tool.main(['sr', '--device', 'cpu', '--height', '12', '--width', '16', '--steps', '1', '--warmup', '0',
               '--json', str(out)])
    row = json.loads(out.read_text())['results'][0]
    assert row['model'] == 'dlgsanet_tiny_x4' and row['scale'] == 4 and row['ms_per_image'] > 0


@pytest.mark.slow
def test_task_models_detection_reports_train_and_inference(tmp_path):
    tool = _load_benchmark_script('task_models')
    out = tmp_path / 'det.json'
    tool.main(['detection', '--device', 'cpu', '--backbones', 'dinat_mini', '--batch-size', '1', '--amp', 'none',
               '--steps', '1', '--warmup', '0', '--json', str(out)])
    row = json.loads(out.read_text())['results'][0]
    assert row['backbone'] == 'dinat_mini' and row['train_img_per_s'] > 0 and row['inference_img_per_s'] > 0


def test_benchmark_jobs_prepare_together_and_time_one_at_a_time(tmp_path):
    """--jobs 2: both measurements are prepared in parallel processes and each still gets its row."""
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--model', 'dinat_mini', 'biformer_tiny',
                    '--device', 'cpu', '--bench', 'inference', '--batch-size', '1', '--img-size', '64', '--steps', '1',
                    '--warmup', '1', '--no-macs', '--threads', '1', '--jobs', '2', '--json', str(out)],
                   check=True, cwd=tmp_path)
    rows = {r['model']: r for r in json.loads(out.read_text())['results']}
    assert set(rows) == {'dinat_mini', 'biformer_tiny'}
    for row in rows.values():
        assert row['inference_img_per_s'] > 0 and row['inference_batch_size'] == 1


def _run_benchmark(tmp_path, *args):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--device', 'cpu', '--no-macs',
                           '--threads', '1', '--steps', '1', '--warmup', '1', '--json', str(out), *args],
                          check=True, cwd=tmp_path, capture_output=True, text=True)
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize('mode', ['eager', 'compile'])
def test_benchmark_modes_measure_both_passes_with_progress_lines(tmp_path, mode):
    """--mode eager / compile (static shapes) on a tiny model: both passes measured, a progress line as each
    finishes; with --inference-then-train one process runs inference, then the SGD train step, on one model."""
    report, stdout = _run_benchmark(tmp_path, '--model', 'test_vit', '--batch-size', '2', '--train-batch-size', '1',
                                    '--mode', mode, '--optimizer', 'sgd', '--inference-then-train')
    row = report['results'][0]
    assert report['mode'] == mode and report['inference_then_train']
    assert row['inference_batch_size'] == 2 and row['train_batch_size'] == 1
    assert row['inference_ms_per_batch'] > 0 and row['train_ms_per_batch'] > 0
    assert f'[1/1] test_vit inference ({mode}): ' in stdout and f'[1/1] test_vit train ({mode}): ' in stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_benchmark_cudagraph_mode_against_a_peer(tmp_path):
    report, stdout = _run_benchmark(tmp_path, '--device', 'cuda', '--model', 'test_vit', 'test_convnext',
                                    '--amp', 'bf16', '--batch-size', '4', '--mode', 'cudagraph', '--baseline',
                                    'test_convnext', '--steps', '3', '--warmup', '3')
    rows = {r['model']: r for r in report['results']}
    assert report['mode'] == 'cudagraph' and rows['test_convnext']['train_vs_baseline'] == 1.0
    assert rows['test_vit']['train_vs_baseline'] > 0 and rows['test_vit']['inference_vs_baseline'] > 0


def test_benchmark_mode_arguments_are_checked():
    benchmark = _load_tool('benchmark')
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--model', 'test_vit', '--device', 'cpu', '--mode', 'cudagraph'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--model', 'test_vit', '--bench', 'train', '--inference-then-train'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--model', 'test_vit', '--timeout', '0'])
    assert benchmark.parse_args(['--model', 'test_vit', '--device', 'cpu', '--compile']).mode == 'compile'


def test_benchmark_child_that_dies_or_hangs_fails_its_row(monkeypatch):
    """A measuring process that exits without a result, or sends none before --timeout, is reported (the hung one
    killed) instead of leaving the parent blocked in queue.get() forever."""
    benchmark = _load_tool('benchmark')  # the spawned children import it by its module name
    died = benchmark._in_subprocess(os._exit, 3, timeout_s=120)
    assert 'exited with code 3' in died['error']
    start = time.monotonic()
    hung = benchmark._in_subprocess(time.sleep, 600, timeout_s=3)
    assert 'no result within --timeout 3 s' in hung['error'] and time.monotonic() - start < 60


def test_distributed_script_parses_logs_and_makes_class_textures():
    dist = _load_benchmark_script('distributed')
    log = '\n'.join(
        f'x - mmengine - INFO - Epoch(train)  [{e}][{i:2d}/10]  base_lr: 1e-3 lr: 1e-4  eta: 0:00:01  '
        f'time: {0.1 * e:.4f}  data_time: 0.0020  memory: 9041  grad_norm: 2.0  loss: {5 - e + i / 10:.4f}'
        for e in (1, 2, 3) for i in (5, 10))
    loss, iter_time, data_time = dist._train_log(log, skip_epochs=1, window=10)
    assert loss == {10: 4.75, 20: 3.75, 30: 2.75}  # keyed by the window's last iteration
    assert dist._train_log(log, skip_epochs=1, window=20)[0] == {20: 4.25, 40: 2.75}
    assert iter_time == pytest.approx(0.25) and data_time == pytest.approx(0.002)
    agreement = dist._loss_agreement({1: 4.0, 2: 2.0}, {1: 4.4, 2: 2.0, 3: 1.0})
    assert agreement == dict(max_rel_diff=0.1, mean_rel_diff=0.05, per_window={1: 0.1, 2: 0.0})
    a, b = dist._texture(0, 10, seed=1, size=32), dist._texture(5, 10, seed=1, size=32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, dist._texture(0, 10, seed=1, size=32)) and not np.array_equal(a, b)


@pytest.mark.skipif(not (PARITY / 'nat_reduced.pt').exists(), reason='needs ../shared/parity (official fixtures)')
def test_convert_checks_the_architecture_the_file_records(tmp_path, capsys):
    """NAT and DiNAT share their keys: a NAT training checkpoint (args.model='nat_mini') is refused for
    --model dinat_mini; a bare state dict converts with the note that the architecture was not checked."""
    import argparse
    fixture = torch.load(PARITY / 'nat_reduced.pt', weights_only=False)
    tool = _load_tool('convert_weights')
    out = tmp_path / 'ours.pth'
    recorded = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': fixture['state_dict'], 'args': argparse.Namespace(model='nat_mini'), 'epoch': 1}, recorded)
    with pytest.raises(SystemExit, match='is a nat_mini checkpoint .*--model nat_mini'):
        tool.main(['--model', 'dinat_mini', '--src', str(recorded), '--out', str(out), '--model-kwargs', *NAT_REDUCED])
    tool.main(['--model', 'nat_mini', '--src', str(recorded), '--out', str(out), '--model-kwargs', *NAT_REDUCED])
    assert 'architecture nat_mini recorded in the file matches' in capsys.readouterr().out
    bare = tmp_path / 'nat_mini.pth'
    torch.save(fixture['state_dict'], bare)
    tool.main(['--model', 'dinat_mini', '--src', str(bare), '--out', str(out), '--model-kwargs', *NAT_REDUCED])
    assert 'the architecture could not be checked' in capsys.readouterr().out


def test_convert_lists_keys_of_another_size_and_needs_trust_to_unpickle(tmp_path):
    from attnzoo.utils.checkpoint import CheckpointError
    tool = _load_tool('convert_weights')
    small = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    src = tmp_path / 'wide.pth'
    state = timm.create_model('nat_mini', **{**small, 'embed_dim': 32}).state_dict()
    torch.save(state, src)
    kwargs = ['embed_dim=16', 'depths=[1,1,1,1]', 'num_heads=[1,2,4,8]']
    with pytest.raises(CheckpointError, match='of another size'):
        tool.main(['--model', 'nat_mini', '--src', str(src), '--out', str(tmp_path / 'o.pth'), '--model-kwargs',
                   *kwargs])
    code = tmp_path / 'code.pth'
    torch.save({'model': state, 'hook': os.getpid}, code)
    with pytest.raises(CheckpointError, match='needs full unpickling.*--trust-checkpoint'):
        tool.main(['--model', 'nat_mini', '--src', str(code), '--out', str(tmp_path / 'o.pth')])
