"""attnzoo.tasks.checkpointing: atomic writes, deferred removals, the choice of the checkpoint to resume, the
configs' checkpoint hook, and the summary hook's state through a checkpoint."""
import glob
import logging
import os
import os.path as osp
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

import attnzoo.tasks  # noqa: F401  (registers the hooks)
from attnzoo.tasks import checkpointing as ckpt
from attnzoo.tasks.classification import ClsSummaryHook
from attnzoo.utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def training_checkpoint(path: Path, epoch: int) -> Path:
    """A small file shaped like mmengine's training checkpoints."""
    torch.save({'meta': {'epoch': epoch, 'iter': 3 * epoch}, 'state_dict': {'w': torch.zeros(2)},
                'message_hub': MessageHub.get_instance('ckpt-test').state_dict()}, path)
    return path


# --------------------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------------------
def test_write_atomically_replaces_the_file_and_leaves_no_part(tmp_path):
    target = tmp_path / 'sub' / 'f.bin'
    ckpt.write_atomically(str(target), b'one')
    ckpt.write_atomically(str(target), b'two')
    assert target.read_bytes() == b'two' and os.listdir(target.parent) == ['f.bin']


def test_write_interrupted_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    """A write that dies before its rename (here: fsync fails) leaves the old file whole and the rest in .part."""
    target = tmp_path / 'last_checkpoint'
    target.write_text('/old/epoch_1.pth')

    def fail(fd):
        raise OSError('disk gone')

    monkeypatch.setattr(ckpt.os, 'fsync', fail)
    with pytest.raises(OSError, match='disk gone'):
        ckpt.AtomicLocalBackend().put_text('/new/epoch_2.pth', str(target))
    assert target.read_text() == '/old/epoch_1.pth'
    assert (tmp_path / ('last_checkpoint' + ckpt.PARTIAL_SUFFIX)).read_text() == '/new/epoch_2.pth'
    assert ckpt.remove_partial_files(str(tmp_path)) == [str(target) + ckpt.PARTIAL_SUFFIX]
    assert os.listdir(tmp_path) == ['last_checkpoint']


def test_removals_deferred_until_the_block_completes(tmp_path):
    backend = ckpt.AtomicLocalBackend()
    old, best, rewritten = (tmp_path / n for n in ('epoch_1.pth', 'best_1.pth', 'best_2.pth'))
    for path in (old, best, rewritten):
        path.write_bytes(b'x')
    with backend.removals_deferred():
        backend.remove(str(old))
        with backend.removals_deferred():  # nested: waits for the outer block
            backend.remove(str(best))
        assert old.exists() and best.exists()
        backend.remove(str(rewritten))
        backend.put(b'new', str(rewritten))  # written again after its removal was asked: kept
    assert not old.exists() and not best.exists() and rewritten.read_bytes() == b'new'

    with pytest.raises(RuntimeError):
        with backend.removals_deferred():
            backend.remove(str(rewritten))
            raise RuntimeError('the save failed')
    assert rewritten.exists()  # an error keeps every file
    backend.remove(str(rewritten))  # outside a block: at once
    assert not rewritten.exists()


def test_hook_refuses_remote_storage():
    with pytest.raises(ValueError, match='backend_args'):
        ckpt.AtomicCheckpointHook(interval=1, backend_args=dict(backend='petrel'))
    with pytest.raises(ValueError, match='file_client_args'):
        ckpt.AtomicCheckpointHook(interval=1, file_client_args=dict(backend='disk'))
    assert ckpt.AtomicCheckpointHook(interval=1).backend_args == dict(backend=ckpt.ATOMIC_BACKEND)


def test_every_config_writes_checkpoints_atomically():
    """Every task's configs (epoch- and iteration-based) use AtomicCheckpointHook."""
    paths = [p for p in glob.glob(str(REPO / 'configs' / '*' / '*.py')) if '_base_' not in p]
    assert len(paths) > 40
    for path in paths:
        hook = Config.fromfile(path).default_hooks.checkpoint
        assert hook.type == 'AtomicCheckpointHook', (path, hook)


# --------------------------------------------------------------------------------------------------------------
# resume: which file
# --------------------------------------------------------------------------------------------------------------
def test_candidates_newest_step_first_with_the_pointer_target(tmp_path):
    for name in ('epoch_2.pth', 'epoch_10.pth', 'best_accuracy_top1_epoch_10.pth', 'epoch_3.pth.part', 'x.pth'):
        (tmp_path / name).write_bytes(b'x')
    elsewhere = tmp_path / 'out' / 'custom.pth'
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(elsewhere))
    assert [osp.basename(p) for p in ckpt.resume_candidates(str(tmp_path))] == \
        ['epoch_10.pth', 'epoch_2.pth', 'custom.pth']


def test_find_resume_checkpoint_skips_what_does_not_load(tmp_path):
    good = training_checkpoint(tmp_path / 'epoch_1.pth', 1)
    (tmp_path / 'epoch_3.pth').write_bytes(good.read_bytes()[:200])  # truncated by a kill
    torch.save({'state_dict': {'w': torch.zeros(2)}}, tmp_path / 'epoch_2.pth')  # weights, no training state
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    path, skipped = ckpt.find_resume_checkpoint(str(tmp_path))
    assert path == osp.realpath(good)
    assert len(skipped) == 2 and 'epoch_3.pth' in skipped[0] and 'truncated' in skipped[0]
    assert 'epoch_2.pth' in skipped[1] and 'not a training checkpoint (no meta, message_hub)' in skipped[1]
    assert ckpt.find_resume_checkpoint(str(tmp_path / 'empty')) == (None, [])


def resume_cfg(work_dir, **extra) -> Config:
    return Config({'work_dir': str(work_dir), 'launcher': 'none', 'resume': False, 'load_from': None, **extra})


def test_configure_resume_modes(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match=r'--resume: no checkpoint to resume .*--resume auto'):
        ckpt.configure_resume(resume_cfg(empty), True)
    cfg = resume_cfg(empty, load_from='init.pth')
    ckpt.configure_resume(cfg, 'auto')  # nothing: a fresh run from the config's load_from
    assert cfg.resume is False and cfg.load_from == 'init.pth'
    with pytest.raises(ValueError, match=r"--resume 'nope.pth': no such file"):
        ckpt.configure_resume(resume_cfg(empty), 'nope.pth')

    wd = tmp_path / 'wd'
    wd.mkdir()
    first = training_checkpoint(wd / 'epoch_1.pth', 1)
    for resume in (True, 'auto'):
        cfg = resume_cfg(wd)
        ckpt.configure_resume(cfg, resume)
        assert cfg.resume is True and cfg.load_from == osp.realpath(first)
    cfg = resume_cfg(wd, resume=True)  # the config's own resume=True (no load_from) is 'auto'
    ckpt.configure_resume(cfg, None)
    assert cfg.load_from == osp.realpath(first)
    cfg = resume_cfg(wd)
    ckpt.configure_resume(cfg, str(first))
    assert cfg.resume is True and cfg.load_from == str(first)
    cfg = resume_cfg(wd)
    ckpt.configure_resume(cfg, None)  # no --resume, config without resume: untouched
    assert cfg.resume is False and cfg.load_from is None


# --------------------------------------------------------------------------------------------------------------
# the summary through a checkpoint
# --------------------------------------------------------------------------------------------------------------
class FakeRunner:
    """What the summary hook reads of a Runner."""

    def __init__(self, hub_name: str):
        self.message_hub, self.epoch, self.iter = MessageHub.get_instance(hub_name), 0, 0
        self.logger = logging.getLogger('test_checkpointing')


def test_summary_state_survives_a_resume(tmp_path):
    """best_top1 and time after a resume cover the run before the checkpoint (the issue: 97.49 reported for a
    run whose best checkpoint scored 98.33, and time= counting only the resumed part)."""
    before = ClsSummaryHook()
    runner = FakeRunner('summary-before')
    before.before_train(runner)
    before._t -= 100.0  # 100 s of training so far
    before.after_val_epoch(runner, {'accuracy/top1': 98.33, 'accuracy/top5': 99.9})
    before.after_val_epoch(runner, {'accuracy/top1': 97.49, 'accuracy/top5': 99.8})
    checkpoint = {'message_hub': runner.message_hub.state_dict()}
    before.before_save_checkpoint(runner, checkpoint)

    torch.save(checkpoint, tmp_path / 'c.pth')
    checkpoint = load_checkpoint(tmp_path / 'c.pth')  # tensors-only loading: plain numbers and dicts
    after, resumed = ClsSummaryHook(), FakeRunner('summary-after')
    resumed.message_hub.load_state_dict(checkpoint['message_hub'])  # what mmengine's resume does
    after.before_train(resumed)
    after._t -= 20.0
    resumed.epoch, resumed.iter = 10, 300
    after.after_train(resumed)
    assert 'top1=97.49' in after.summary and 'best_top1=98.33' in after.summary
    assert 'epochs=10 iters=300' in after.summary
    seconds = float(after.summary.rsplit('time=', 1)[1].rstrip('s'))
    assert 120.0 <= seconds < 130.0


def test_summary_state_not_taken_from_a_fresh_run():
    """Without a resume (a fresh message hub, e.g. ``load_from``) the summary starts empty."""
    hook, runner = ClsSummaryHook(), FakeRunner('summary-fresh')
    hook.before_train(runner)
    assert hook.best is None and hook.last_metrics is None and hook.state_dict()['train_seconds'] < 5.0
