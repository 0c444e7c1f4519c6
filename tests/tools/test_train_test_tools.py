"""tools/train.py and tools/test.py end to end, as subprocesses, on a tiny synthetic ImageNet folder:
train a few iterations, test a checkpoint, kill mid-epoch and --resume, 2-process gloo DDP via
torchrun, and (slow) the digits demo to >= 90 % top-1."""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'classification' / 'demo_digits.py'
TRAIN = REPO / 'tools' / 'train.py'
TEST = REPO / 'tools' / 'test.py'
# 12 train images, batch 4 -> 3 iterations per epoch; 6 val images
SMALL = ['train_dataloader.batch_size=4', 'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4',
         'default_hooks.logger.interval=1']


@pytest.fixture(scope='module')
def folder(tiny_imagefolder):
    return tiny_imagefolder


def run(args, cwd, env_extra=None, timeout=300, check=True):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.update(env_extra or {})
    env = {k: v for k, v in env.items() if v is not None}  # None: unset
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f'exit {proc.returncode}\n{proc.stdout[-6000:]}')
    return proc


def final(out):
    m = re.search(r'Final: top1=([\d.]+) top5=([\d.]+)(.*)', out)
    assert m, out[-3000:]
    return float(m.group(1)), float(m.group(2)), m.group(3)


def test_train_then_test_checkpoint(folder, tmp_path):
    wd = tmp_path / 'wd'
    out = run([TRAIN, DEMO, '--work-dir', wd, '--data-root', folder, '--amp', 'bf16',
               '--cfg-options', 'train_cfg.max_epochs=1', *SMALL], cwd=tmp_path).stdout
    assert 'Epoch(train) [1][3/3]' in out
    top1, top5, rest = final(out)
    assert 0 <= top1 <= 100 and top5 == 100.0  # 3 classes: top-5 is always right
    assert 'epochs=1 iters=3' in rest
    assert (wd / 'epoch_1.pth').is_file() and (wd / 'last_checkpoint').is_file()

    out = run([TEST, DEMO, wd / 'epoch_1.pth', '--work-dir', tmp_path / 'wd_test', '--data-root', folder,
               '--cfg-options', 'test_dataloader.batch_size=4'], cwd=tmp_path).stdout
    t1, _, rest = final(out)
    assert t1 == pytest.approx(top1, abs=1e-6) and 'samples=6' in rest  # same weights, same val set

    missing = run([TEST, DEMO, wd / 'nope.pth'], cwd=tmp_path, check=False)
    assert missing.returncode != 0 and 'does not exist' in missing.stdout

    # a bare state dict of the network (what tools/convert_weights.py writes) evaluates the same
    import torch
    state = torch.load(wd / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    bare = {k[len('model.'):]: v for k, v in state.items() if k.startswith('model.')}
    torch.save(bare, tmp_path / 'bare.pth')
    out = run([TEST, DEMO, tmp_path / 'bare.pth', '--work-dir', tmp_path / 'wd_bare', '--data-root', folder,
               '--cfg-options', 'test_dataloader.batch_size=4'], cwd=tmp_path).stdout
    assert final(out)[0] == pytest.approx(top1, abs=1e-6)
    bare.pop(next(iter(bare)))
    torch.save(bare, tmp_path / 'partial.pth')
    partial = run([TEST, DEMO, tmp_path / 'partial.pth', '--data-root', folder], cwd=tmp_path, check=False)
    assert partial.returncode != 0 and 'does not fit' in partial.stdout


KILL_HOOK = '''
import os, signal
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILLs its own process after iteration $KILL_AT_ITER (1-based): a hard crash mid-epoch."""
    priority = 'LOWEST'  # after the logger has printed the iteration
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        at = int(os.environ.get('KILL_AT_ITER', '0'))
        if at and runner.iter + 1 == at:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_kill_mid_epoch_then_resume_with_ema(folder, tmp_path):
    (tmp_path / 'killhook.py').write_text(KILL_HOOK)
    cfg = tmp_path / 'demo_kill.py'
    cfg.write_text(f"_base_ = {str(DEMO)!r}\n"
                   "custom_imports = dict(imports=['killhook'], allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='ClsSummaryHook'), dict(type='KillAtIterHook'),\n"
                   "                dict(type='EMAHook', momentum=0.01, update_buffers=True, priority='ABOVE_NORMAL')]\n")
    wd = tmp_path / 'wd'
    args = [TRAIN, cfg, '--work-dir', wd, '--data-root', folder, '--cfg-options', 'train_cfg.max_epochs=3', *SMALL]
    env = {'PYTHONPATH': str(tmp_path)}
    killed = run(args, cwd=tmp_path, env_extra={**env, 'KILL_AT_ITER': '5'}, check=False)
    assert killed.returncode == -9, killed.stdout[-3000:]  # died in epoch 2, iteration 5 of 9
    assert 'Epoch(train) [2][2/3]' in killed.stdout and 'Epoch(train) [2][3/3]' not in killed.stdout
    assert (wd / 'epoch_1.pth').is_file() and not (wd / 'epoch_2.pth').exists()

    out = run([*args, '--resume'], cwd=tmp_path, env_extra=env).stdout
    assert 'resumed epoch: 1, iter: 3' in out
    assert 'Epoch(train) [1]' not in out and 'Epoch(train) [2][1/3]' in out  # continues at epoch 2
    _, _, rest = final(out)
    assert 'epochs=3 iters=9' in rest
    assert (wd / 'epoch_3.pth').is_file()
    # the EMA state went through the kill/resume too, and test.py evaluates the (EMA) checkpoint
    out = run([TEST, cfg, wd / 'epoch_3.pth', '--work-dir', tmp_path / 'wd_test', '--data-root', folder],
              cwd=tmp_path, env_extra=env).stdout
    assert 'samples=6' in final(out)[2]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_gloo(folder, tmp_path):
    wd = tmp_path / 'wd'

    def torchrun(*extra, epochs):
        return run(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
                    '--master_port', _free_port(), TRAIN, DEMO, '--launcher', 'pytorch', '--work-dir', wd,
                    '--data-root', folder, *extra, '--cfg-options', f'train_cfg.max_epochs={epochs}',
                    'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2', 'default_hooks.logger.interval=1'],
                   cwd=tmp_path).stdout

    out = torchrun(epochs=1)
    assert 'Distributed training: True' in out
    assert "'backend': 'gloo'" in out
    assert out.count('Epoch(train) [1][3/3]') == 1  # 12 images / 2 ranks / batch 2 = 3 iterations; rank 0 logs
    top1, _, rest = final(out)
    assert 'epochs=1 iters=3' in rest
    # only rank 0 writes: one run directory with one log, one set of checkpoints
    assert len(list(wd.glob('*/*.log'))) == 1
    assert sorted(p.name for p in wd.glob('*.pth')) == ['best_accuracy_top1_epoch_1.pth', 'epoch_1.pth']
    # the gathered val metric covers all 6 val images once: a multiple of 100/6 ...
    assert (top1 * 6 / 100) == pytest.approx(round(top1 * 6 / 100), abs=1e-3)  # top1 is printed to 0.01
    # ... and equals a single-process evaluation of the same checkpoint
    single = run([TEST, DEMO, wd / 'epoch_1.pth', '--work-dir', tmp_path / 'wd_test', '--data-root', folder,
                  '--cfg-options', 'test_dataloader.batch_size=4'], cwd=tmp_path).stdout
    assert final(single)[0] == pytest.approx(top1, abs=1e-6) and 'samples=6' in final(single)[2]
    # --resume under DDP continues after the last checkpoint that loads: rank 0 skips a newer, truncated one (a
    # kill mid-write) that the pointer names, and every rank resumes its choice (or the ranks' steps would differ)
    (wd / 'epoch_9.pth').write_bytes((wd / 'epoch_1.pth').read_bytes()[:4096])
    (wd / 'last_checkpoint').write_text(str(wd / 'epoch_9.pth'))
    resumed = torchrun('--resume', epochs=2)
    assert f'--resume skips {wd / "epoch_9.pth"}' in resumed and 'truncated' in resumed
    assert 'resumed epoch: 1, iter: 3' in resumed
    assert 'Epoch(train) [1]' not in resumed and 'Epoch(train) [2][1/3]' in resumed
    assert 'epochs=2 iters=6' in final(resumed)[2] and (wd / 'epoch_2.pth').is_file()
    assert len(list(wd.glob('*/*.log'))) == 2  # one per run, both from rank 0


@pytest.mark.slow
def test_digits_demo_reaches_90_percent(tmp_path):
    t0 = time.time()
    out = run([TRAIN, DEMO, '--work-dir', tmp_path / 'wd', '--data-root', tmp_path / 'digits'],
              cwd=tmp_path, env_extra={'OMP_NUM_THREADS': None}, timeout=900).stdout
    wall = time.time() - t0
    top1, top5, rest = final(out)
    print(f'demo: top1={top1} top5={top5} {rest.strip()} wall={wall:.0f}s')
    assert top1 >= 90.0
    assert wall < 600
    assert len(list((tmp_path / 'digits' / 'val').rglob('*.png'))) == 359
