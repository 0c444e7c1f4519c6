"""tools/train.py killed (SIGKILL, a real subprocess) during a save and at random moments, then resumed: training
continues from the last complete checkpoint, at most one epoch of work is lost, and the summary line counts the
runs before the kill. The faults come from tests/tools/fault_injection.py."""
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attnzoo.utils.checkpoint import load_checkpoint
from test_sr_tools import DEMO as SR_DEMO
from test_sr_tools import TINY as SR_TINY
from test_sr_tools import photos  # noqa: F401  (a fixture)
from test_train_test_tools import DEMO, SMALL, TRAIN, final, folder, run  # noqa: F401  (folder: a fixture)

HERE = Path(__file__).resolve().parent
ENV = {'PYTHONPATH': str(HERE)}  # fault_injection importable by the run
VAL_TOP1 = re.compile(r'Epoch\(val\) \[\d+\]\[\d+/\d+\]\s+accuracy/top1: ([\d.]+)')


def fault_config(tmp_path: Path, base: Path = DEMO, summary: str = 'ClsSummaryHook') -> Path:
    """``base`` (default: the digits demo, max_keep_ckpts=1) with tests/tools/fault_injection.py imported."""
    cfg = tmp_path / 'demo_faults.py'
    cfg.write_text(f"_base_ = {str(base)!r}\n"
                   "custom_imports = dict(imports=['fault_injection'], allow_failed_imports=False)\n"
                   f"custom_hooks = [dict(type={summary!r}), dict(type='SleepBeforeEpochHook')]\n")
    return cfg


def summary_state(path: Path) -> dict:
    return load_checkpoint(path)['message_hub']['runtime_info']['summary_hook']


def assert_consistent(wd: Path) -> None:
    """What a kill may leave: every ``*.pth`` loads, and ``last_checkpoint`` (if any) names a file that exists."""
    for path in wd.glob('*.pth'):
        load_checkpoint(path)
    pointer = wd / 'last_checkpoint'
    if pointer.exists():
        assert Path(pointer.read_text().strip()).is_file(), pointer.read_text()


@pytest.mark.parametrize('target, resumed_epoch', [('epoch_2.pth', 1), ('last_checkpoint:3', 2)],
                         ids=['checkpoint', 'pointer'])
def test_sigkill_during_a_save_then_resume(folder, tmp_path, target, resumed_epoch):
    """SIGKILL while epoch_2.pth is written (mmengine had already deleted epoch_1.pth, the only resumable file), or
    while ``last_checkpoint`` is rewritten after it (mmengine truncated it first)."""
    wd = tmp_path / 'wd'
    args = [TRAIN, fault_config(tmp_path), '--work-dir', wd, '--data-root', folder,
            '--cfg-options', 'train_cfg.max_epochs=3', *SMALL]
    killed = run(args, cwd=tmp_path, check=False, env_extra={
        **ENV, 'ATTNZOO_TEST_KILL_WRITING': target, 'ATTNZOO_TEST_SLEEP_BEFORE_EPOCH': '1:3'})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert list(wd.glob('*.part')), 'the kill did not fall in a write'
    assert_consistent(wd)
    # the checkpoint to resume holds the summary's state: the training time (3 s of sleep) and the best top-1
    # so far (validation 1 ran before it was saved last)
    state = summary_state(wd / f'epoch_{resumed_epoch}.pth')
    killed_top1 = [float(v) for v in VAL_TOP1.findall(killed.stdout)]
    assert state['train_seconds'] >= 3.0 and state['best'] == pytest.approx(max(killed_top1))

    out = run([*args, '--resume'], cwd=tmp_path, env_extra=ENV).stdout
    assert f'resumed epoch: {resumed_epoch}, iter: {3 * resumed_epoch}' in out
    assert f'Epoch(train) [{resumed_epoch}]' not in out and f'Epoch(train) [{resumed_epoch + 1}][1/3]' in out
    assert 'the part of a save that was interrupted' in out and not list(wd.glob('*.part'))
    _, _, rest = final(out)
    assert 'epochs=3 iters=9' in rest
    best = float(re.search(r'best_top1=([\d.]+)', rest).group(1))
    assert best == pytest.approx(max(killed_top1 + [float(v) for v in VAL_TOP1.findall(out)]), abs=0.01)
    assert float(re.search(r'time=([\d.]+)s', rest).group(1)) >= state['train_seconds']
    assert (wd / 'epoch_3.pth').is_file()
    assert_consistent(wd)


def test_iteration_based_sigkill_during_a_save_then_resume(photos, tmp_path):
    """The same for an iteration-based task (super-resolution, iter_<n>.pth): killed while iter_4.pth is written,
    the run resumes at iteration 2 and its summary's best PSNR covers the validation before the kill."""
    wd = tmp_path / 'wd'
    args = [TRAIN, fault_config(tmp_path, SR_DEMO, 'SRSummaryHook'), '--work-dir', wd, '--data-root', photos,
            '--cfg-options', *SR_TINY, 'train_cfg.max_iters=6']
    killed = run(args, cwd=tmp_path, check=False, env_extra={**ENV, 'ATTNZOO_TEST_KILL_WRITING': 'iter_4.pth'})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert (wd / 'iter_2.pth').is_file() and not (wd / 'iter_4.pth').exists()
    assert_consistent(wd)
    killed_psnr = [float(v) for v in re.findall(r'Iter\(val\) \[\d+/\d+\]\s+psnr: ([\d.]+)', killed.stdout)]
    assert summary_state(wd / 'iter_2.pth')['best'] == pytest.approx(max(killed_psnr))

    out = run([*args, '--resume'], cwd=tmp_path, env_extra=ENV).stdout
    assert 'resumed epoch: 0, iter: 2' in out and 'Iter(train) [1/6]' not in out and 'Iter(train) [3/6]' in out
    psnr = [float(v) for v in re.findall(r'Iter\(val\) \[\d+/\d+\]\s+psnr: ([\d.]+)', out)]
    best = float(re.search(r'Final: .* best_psnr=([\d.]+)', out).group(1))
    assert 'iters=6' in out and best == pytest.approx(max(killed_psnr + psnr), abs=1e-4)
    assert (wd / 'iter_6.pth').is_file() and not list(wd.glob('*.part'))


def test_resume_with_nothing_to_resume(folder, tmp_path):
    """A bare ``--resume`` with nothing to resume is an error; ``--resume auto`` then starts from scratch."""
    wd = tmp_path / 'wd'
    wd.mkdir()
    (wd / 'epoch_1.pth').write_bytes(b'PK\x03\x04' + bytes(100))  # a truncated zip: skipped, named
    args = [TRAIN, DEMO, '--work-dir', wd, '--data-root', folder, '--cfg-options', 'train_cfg.max_epochs=1', *SMALL]
    refused = run([*args, '--resume'], cwd=tmp_path, check=False)
    assert refused.returncode != 0 and 'ValueError: --resume: no checkpoint to resume' in refused.stdout
    assert f'--resume skips {os.path.realpath(wd / "epoch_1.pth")}' in refused.stdout and 'truncated' in refused.stdout
    out = run([*args, '--resume', 'auto'], cwd=tmp_path).stdout
    assert 'training from the start' in out and 'Epoch(train) [1][1/3]' in out
    assert 'epochs=1 iters=3' in final(out)[2]


class Reader(threading.Thread):
    """Collects a process's output lines, and notes when the first training iteration is logged."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc, self.lines, self.training = proc, [], threading.Event()

    def run(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if 'Epoch(train)' in line:
                self.training.set()
        self.training.set()  # the process ended


def last_int(pattern: str, text: str, default: int = 0) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else default


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(folder, tmp_path):
    """Five runs killed at random moments of their training (saves included), each resumed by the next: each
    resume starts at the last checkpoint the killed run completed, losing at most the epoch in progress."""
    wd = tmp_path / 'wd'
    epochs = 8
    args = [sys.executable, TRAIN, DEMO, '--work-dir', wd, '--data-root', folder, '--resume', 'auto',
            '--cfg-options', f'train_cfg.max_epochs={epochs}', *SMALL]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    rng = random.Random(16)
    saved = 0  # epochs of the last checkpoint a killed run reported complete
    for _ in range(5):
        proc = subprocess.Popen([str(a) for a in args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = Reader(proc)
        reader.start()
        assert reader.training.wait(timeout=300)
        time.sleep(rng.uniform(0.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=60)
        out = ''.join(reader.lines)
        resumed = last_int(r'resumed epoch: (\d+)', out)
        assert resumed >= saved, out[-3000:]  # nothing a previous run completed was lost
        if proc.returncode == 0:
            break
        assert_consistent(wd)
        running = last_int(r'Epoch\(train\) \[(\d+)\]', out, default=resumed + 1)
        saved = max(resumed, last_int(r'Saved checkpoint .*epoch_(\d+)\.pth', out))
        print(f'killed in epoch {running} (resumed at {resumed}, last complete checkpoint: epoch {saved})')
        assert saved >= running - 1, out[-3000:]  # at most the epoch in progress (or being saved) is lost
    out = run(args[1:], cwd=tmp_path).stdout
    assert last_int(r'resumed epoch: (\d+)', out) >= saved
    assert f'epochs={epochs} iters={3 * epochs}' in final(out)[2]
