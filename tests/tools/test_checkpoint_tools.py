"""tools/test.py and tools/train.py load checkpoints strictly and unpickle only tensors unless
--trust-checkpoint: a checkpoint of another class count or width stops with the keys that do not fit (it used
to log warnings and report chance-level accuracy with exit code 0), fine-tuning with another head is the
explicit load_from_finetune=True, and a file needing full unpickling is refused naming the flag."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'classification' / 'demo_digits.py'
TRAIN = REPO / 'tools' / 'train.py'
TEST = REPO / 'tools' / 'test.py'
SMALL = ['train_dataloader.batch_size=4', 'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4']


@pytest.fixture(scope='module')
def folder(tiny_imagefolder):
    return tiny_imagefolder


def _runner_checkpoint(path: Path, extra=None) -> Path:
    """What tools/train.py writes for the demo model: the task model's state dict and mmengine's message hub."""
    import attnzoo.tasks  # noqa: F401  (registers TimmClassifier)
    from mmengine.config import Config
    from mmengine.logging import MessageHub
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(DEMO)).model)
    hub = MessageHub(f'ckpt_tools_{path.stem}')
    hub.update_scalar('train/loss', 1.0)
    torch.save({'meta': {'epoch': 1, 'iter': 3}, 'state_dict': model.state_dict(),
                'message_hub': hub.state_dict(), **(extra or {})}, path)
    return path


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return _runner_checkpoint(tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth')


def run(args, cwd, check=True):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, timeout=300,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f'exit {proc.returncode}\n{proc.stdout[-6000:]}')
    return proc


def test_checkpoint_of_another_class_count_is_refused(folder, checkpoint, tmp_path):
    out = run([TEST, DEMO, checkpoint, '--data-root', folder, '--work-dir', tmp_path / 'wd',
               '--cfg-options', 'model.num_classes=5', *SMALL], cwd=tmp_path, check=False)
    assert out.returncode != 0 and 'Final:' not in out.stdout
    assert 'does not fit' in out.stdout
    assert 'model.head.fc.weight: (10, 256) in the file, (5, 256) in the model' in out.stdout


def test_checkpoint_of_another_width_is_refused(folder, checkpoint, tmp_path):
    out = run([TEST, DEMO, checkpoint, '--data-root', folder, '--work-dir', tmp_path / 'wd',
               '--cfg-options', 'model.model_kwargs.embed_dim=48', *SMALL], cwd=tmp_path, check=False)
    assert out.returncode != 0 and 'Final:' not in out.stdout
    assert 'does not fit' in out.stdout and 'key(s) of another size' in out.stdout


def test_checkpoint_needing_full_unpickling_needs_the_flag(folder, tmp_path):
    path = _runner_checkpoint(tmp_path / 'code.pth', extra={'hook': os.getpid})  # a pickled function
    refused = run([TEST, DEMO, path, '--data-root', folder, '--work-dir', tmp_path / 'wd', '--cfg-options', *SMALL],
                  cwd=tmp_path, check=False)
    assert refused.returncode != 0 and 'Final:' not in refused.stdout
    assert 'needs full unpickling' in refused.stdout and '--trust-checkpoint' in refused.stdout
    trusted = run([TEST, DEMO, path, '--data-root', folder, '--work-dir', tmp_path / 'wd', '--trust-checkpoint',
                   '--cfg-options', *SMALL], cwd=tmp_path)
    assert 'Final: top1=' in trusted.stdout


def test_text_file_as_checkpoint(folder, tmp_path):
    path = tmp_path / 'epoch_1.pth'
    path.write_text('not a checkpoint\n')
    out = run([TEST, DEMO, path, '--data-root', folder], cwd=tmp_path, check=False)
    assert out.returncode != 0 and 'is not a checkpoint' in out.stdout


def test_finetune_from_another_head_is_explicit(folder, checkpoint, tmp_path):
    args = [TRAIN, DEMO, '--data-root', folder, '--work-dir', tmp_path / 'wd',
            '--cfg-options', f'load_from={checkpoint}', 'model.num_classes=3', 'train_cfg.max_epochs=1', *SMALL]
    refused = run(args, cwd=tmp_path, check=False)
    assert refused.returncode != 0 and 'does not fit' in refused.stdout and 'head.fc.weight' in refused.stdout
    out = run([*args, 'load_from_finetune=True'], cwd=tmp_path).stdout
    assert 'fine-tuning: classifier entries that do not fit keep their init' in out and 'Final: top1=' in out
