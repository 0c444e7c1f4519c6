"""attnzoo.tasks.compiling: --compile's config edit, CompileHook's checks and CUDA-graph step marks, training the
digits demo with the network compiled (in-process, aot_eager: tracing without code generation), the
attnzoo-train --compile command with Inductor (slow), and CUDA-graph training on a GPU (skipped without CUDA)."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from torch.utils.data import DataLoader

import attnzoo  # noqa: F401
import attnzoo.tasks  # noqa: F401  (registers the task components)
from attnzoo.tasks.compiling import (COMPILE_MODES, CUDAGRAPH_MODE, CompileHook, apply_compile,
                                     check_cudagraph_training)
from attnzoo.tasks.runner import StrictRunner

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'classification' / 'demo_digits.py'
TRAIN = REPO / 'tools' / 'train.py'


@pytest.fixture(scope='module')
def folder(tiny_imagefolder):
    return tiny_imagefolder


def demo_cfg(folder, work_dir, batch=4, epochs=1):
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = str(work_dir)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(folder)
        cfg[key].batch_size = batch
    cfg.train_cfg.max_epochs = epochs
    cfg.default_hooks.logger.interval = 1
    return cfg


# ------------------------------------------------------------------------------------ config
def test_apply_compile_appends_the_hook_and_refuses_conflicts(folder, tmp_path):
    cfg = demo_cfg(folder, tmp_path)
    before = list(cfg.custom_hooks)
    apply_compile(cfg, CUDAGRAPH_MODE)
    assert cfg.custom_hooks == before + [dict(type='CompileHook', mode=CUDAGRAPH_MODE, module='model')]
    with pytest.raises(ValueError, match='already has a CompileHook'):
        apply_compile(cfg, 'default')
    with pytest.raises(ValueError, match='compile mode must be one of'):
        apply_compile(demo_cfg(folder, tmp_path), 'max-autotune')
    mm = demo_cfg(folder, tmp_path)
    mm.compile = True
    with pytest.raises(ValueError, match='cfg.compile=True'):
        apply_compile(mm, 'default')


def test_hook_argument_errors():
    assert set(COMPILE_MODES) == {'default', 'max-autotune-no-cudagraphs', 'reduce-overhead'}
    with pytest.raises(ValueError, match='compile mode'):
        CompileHook(mode='fast')
    with pytest.raises(ValueError, match='dynamic must be False or None'):
        CompileHook(dynamic=True)
    with pytest.raises(ValueError, match='module must be'):
        CompileHook(module='')


def test_cudagraph_mode_needs_drop_last_and_no_accumulation():
    data = list(range(10))
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    check_cudagraph_training(DataLoader(data, batch_size=4, drop_last=True), OptimWrapper(sgd))
    with pytest.raises(ValueError, match=r'train_dataloader.drop_last=True'):
        check_cudagraph_training(DataLoader(data, batch_size=4), OptimWrapper(sgd))
    with pytest.raises(ValueError, match=r'optim_wrapper.accumulative_counts must be 1, got 2'):
        check_cudagraph_training(DataLoader(data, batch_size=4, drop_last=True),
                                 OptimWrapper(sgd, accumulative_counts=2))


def test_hook_checks_the_train_loader_and_names_a_missing_module():
    task = nn.Module()
    task.model = nn.Linear(2, 2)
    sgd = torch.optim.SGD(task.parameters(), lr=0.1)
    runner = SimpleNamespace(model=task, optim_wrapper=OptimWrapper(sgd),
                             train_dataloader=DataLoader(list(range(10)), batch_size=4))
    with pytest.raises(ValueError, match='drop_last'):
        CompileHook(mode=CUDAGRAPH_MODE).before_train(runner)
    assert task.model._compiled_call_impl is None  # refused before compiling
    CompileHook(mode='default', backend='aot_eager').before_train(runner)  # no shape requirement
    assert task.model._compiled_call_impl is not None
    with pytest.raises(ValueError, match=r"module='backbone' is not a submodule of Module; its children: \['model'\]"):
        CompileHook(module='backbone').before_train(runner)


def test_only_cudagraph_mode_marks_each_iteration(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    for mode in COMPILE_MODES:
        hook = CompileHook(mode=mode)
        hook.before_train_iter(None, 0)
        hook.before_val_iter(None, 0)
        hook.before_test_iter(None, 0)
    assert len(marks) == 3  # train, val and test iterations of reduce-overhead only


# ------------------------------------------------------------------------------------ training
def test_train_command_parses_the_compile_flag():
    from attnzoo.cli.train import parse_args
    assert parse_args([str(DEMO)]).compile is None
    assert parse_args([str(DEMO), '--compile']).compile == 'default'
    assert parse_args([str(DEMO), '--compile', CUDAGRAPH_MODE]).compile == CUDAGRAPH_MODE
    with pytest.raises(SystemExit):
        parse_args([str(DEMO), '--compile', 'max-autotune'])


def test_digits_demo_trains_with_the_network_compiled(folder, tmp_path, monkeypatch):
    """Mixup, bf16 autocast, gradient clipping, EMA and the log around a compiled network in CUDA-graph mode
    (aot_eager on the CPU: the hook's checks and step marks, no graphs); 3 iterations + val. The checkpoint keys
    are the eager model's (compiled in place, no ``_orig_mod.``)."""
    from torch._dynamo.utils import counters
    marks = []
    mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: (marks.append(1), mark()))
    cfg = demo_cfg(folder, tmp_path / 'wd')
    cfg.model.mixup = dict(mixup_alpha=0.8, cutmix_alpha=1.0)
    cfg.optim_wrapper.type = 'AutoAmpOptimWrapper'
    cfg.optim_wrapper.dtype = 'bfloat16'
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='EMAHook', momentum=0.01, priority='ABOVE_NORMAL')]
    apply_compile(cfg, CUDAGRAPH_MODE)
    cfg.custom_hooks[-1]['backend'] = 'aot_eager'
    counters.clear()
    runner = StrictRunner.from_cfg(cfg)
    eager_keys = set(runner.model.state_dict())
    runner.train()
    network = runner.model.model
    assert network._compiled_call_impl is not None
    # one graph per mode and batch size (train 4; eval 4 and 2, autocast off), no graph break
    assert counters['stats']['unique_graphs'] == 3 and not counters['graph_break']
    scalars = runner.message_hub.log_scalars
    assert np.isfinite(scalars['train/loss'].current()) and np.isfinite(scalars['train/grad_norm'].current())
    assert runner.iter == 3 and len(marks) == 3 + 2  # a mark per train iteration and per val batch (6 images / 4)
    state = torch.load(tmp_path / 'wd' / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert set(state) == eager_keys and not any('_orig_mod' in k for k in state)


@pytest.mark.slow
def test_train_command_compile_default_on_the_digits_demo(folder, tmp_path):
    """``tools/train.py CONFIG --compile``: Inductor's C++ code for the CPU, 3 iterations and a validation (578 s
    on a shared 2-core CPU at load 7, most of it compiling the train and eval graphs)."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), str(DEMO), '--compile', '--work-dir', str(tmp_path / 'wd'),
         '--data-root', str(folder), '--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=4',
         'val_dataloader.batch_size=6', 'default_hooks.logger.interval=1'],  # one val batch: one eval graph
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'CompileHook: model compiled (mode=default, dynamic=False, backend=inductor)' in proc.stdout
    assert 'Epoch(train) [1][3/3]' in proc.stdout and 'Final: top1=' in proc.stdout


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_compiled_network(folder, tmp_path):
    """torchrun, 2 gloo ranks: DDP wraps the task model, CompileHook compiles the network inside it on each rank."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    cfg = tmp_path / 'demo_compiled.py'
    cfg.write_text(f"_base_ = {str(DEMO)!r}\n"
                   "custom_hooks = [dict(type='ClsSummaryHook'), dict(type='CompileHook', backend='aot_eager')]\n")
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
         '--master_port', port, str(TRAIN), str(cfg), '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'wd'),
         '--data-root', str(folder), '--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
         'val_dataloader.batch_size=2', 'default_hooks.logger.interval=1'],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'Distributed training: True' in proc.stdout and 'CompileHook: model compiled' in proc.stdout
    assert 'Epoch(train) [1][3/3]' in proc.stdout and 'Final: top1=' in proc.stdout  # 12 images / 2 ranks / 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA-graph training needs a CUDA GPU')
def test_cudagraph_training_on_gpu_matches_the_setup_it_keeps_eager(folder, tmp_path):
    """reduce-overhead on CUDA: mixup, the fp16 loss scaler, clipping and EMA around the captured network; the
    graphs are not skipped (Inductor counts every CUDA-graph skip) and the loss stays finite."""
    from torch._dynamo.utils import counters
    cfg = demo_cfg(folder, tmp_path / 'wd', epochs=2)
    cfg.model.mixup = dict(mixup_alpha=0.8, cutmix_alpha=1.0)
    cfg.optim_wrapper.type = 'AutoAmpOptimWrapper'
    cfg.optim_wrapper.dtype = 'float16'
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='EMAHook', momentum=0.01, priority='ABOVE_NORMAL')]
    apply_compile(cfg, CUDAGRAPH_MODE)
    counters.clear()
    runner = StrictRunner.from_cfg(cfg)
    runner.train()
    assert not counters['inductor'].get('cudagraph_skips'), dict(counters['inductor'])
    assert np.isfinite(runner.message_hub.log_scalars['train/loss'].current())
    assert runner.iter == 6
