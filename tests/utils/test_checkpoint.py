"""attnzoo.utils.checkpoint.load_checkpoint: tensors-only loading with the allow-list that official and mmengine
checkpoints need, full unpickling only when trusted, and an error that says what an unreadable file is."""
import argparse
import os

import numpy as np
import pytest
import torch

from attnzoo.utils.checkpoint import CheckpointError, load_checkpoint


class _RunsCode:
    """Unpickling this runs ``os.getpid`` (a stand-in for any code)."""

    def __reduce__(self):
        return os.getpid, ()


class _GetattrAbuse:
    """Unpickling this resolves ``numpy.ndarray.tofile`` through ``getattr`` (a file-writing method)."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def _runner_like_checkpoint():
    """What mmengine's Runner pickles besides tensors: the message hub (HistoryBuffer, numpy) and meta."""
    from mmengine.logging import MessageHub
    hub = MessageHub(f'ckpt_test_{id(object())}')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', 0.25)
    hub.update_info('best_score', np.float64(97.5))
    return {'meta': {'epoch': 2, 'iter': 6, 'cfg': 'model = dict()', 'seed': 0},
            'state_dict': {'model.w': torch.ones(3)}, 'message_hub': hub.state_dict()}


def test_mmengine_runner_checkpoint_loads_tensors_only(tmp_path):
    path = tmp_path / 'epoch_2.pth'
    torch.save(_runner_like_checkpoint(), path)
    with pytest.raises(Exception):  # torch's own tensors-only default refuses it
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    assert ckpt['meta']['epoch'] == 2 and torch.equal(ckpt['state_dict']['model.w'], torch.ones(3))
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() == pytest.approx(0.375) and buffer.current() == pytest.approx(0.25)
    assert ckpt['message_hub']['runtime_info']['best_score'] == 97.5


def test_official_training_script_checkpoint_loads(tmp_path):
    """DeiT/ConvNeXt-style files: 'model', 'args' (argparse.Namespace), numpy scalars, numpy arrays."""
    path = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': {'head.weight': torch.zeros(2, 2)}, 'args': argparse.Namespace(model='nat_mini', lr=1e-3),
                'max_accuracy': np.float32(81.5), 'hist': np.arange(4, dtype=np.int64), 'epoch': 299}, path)
    ckpt = load_checkpoint(path)
    assert ckpt['args'].model == 'nat_mini' and ckpt['max_accuracy'] == np.float32(81.5)
    assert ckpt['hist'].tolist() == [0, 1, 2, 3]


def test_parity_fixtures_load(parity_dir):
    for path in sorted(parity_dir.glob('*.pt')):
        assert 'state_dict' in load_checkpoint(path)


def test_code_running_pickle_needs_trust(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r'needs full unpickling.*getpid.*--trust-checkpoint.*trusted=True') as e:
        load_checkpoint(path)
    assert 'weights_only=False' not in str(e.value)  # our advice, not PyTorch's
    assert load_checkpoint(path, trusted=True)['x'] == os.getpid()


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrAbuse()}, path)
    with pytest.raises(CheckpointError, match=r"getattr.*'tofile'.*--trust-checkpoint"):
        load_checkpoint(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint(tmp_path / 'nope.pth')


@pytest.mark.parametrize('content, match', [
    (b'hello, this is a text file\n', 'is not a checkpoint'),
    (b'', 'is empty'),
])
def test_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / 'weights.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_zip_is_named(tmp_path):
    full = tmp_path / 'full.pth'
    torch.save({'w': torch.randn(64, 64)}, full)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt zip'):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match='truncated or corrupt zip'):
        load_checkpoint(cut, trusted=True)


def test_legacy_torch_format_loads(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(path)['w'], torch.ones(2))


def test_safetensors(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / 'w.safetensors'
    save_file({'w': torch.arange(3.0)}, str(path))
    assert torch.equal(load_checkpoint(path)['w'], torch.arange(3.0))
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'not safetensors at all')
    with pytest.raises(CheckpointError, match='not a readable .safetensors'):
        load_checkpoint(bad)


def test_trusted_must_be_bool(tmp_path):
    with pytest.raises(TypeError, match='trusted must be a bool'):
        load_checkpoint(tmp_path / 'x.pth', trusted='yes')
