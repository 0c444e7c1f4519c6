"""tools/publish.py: a training checkpoint -> plain network weights (EMA when kept) that timm loads strictly, as
safetensors and .pth named by their sha256; and the published safetensors evaluate through tools/test.py."""
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnzoo.cli.publish import network_state_dict, publish

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'classification' / 'demo_digits.py'
EMA_HOOKS = ("custom_hooks = [dict(type='ClsSummaryHook'),\n"
             "                dict(type='EMAHook', momentum=0.01, update_buffers=True, priority='ABOVE_NORMAL')]\n")


def _tool(name, *args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / f'{name}.py'), *map(str, args)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_publish_names_files_by_their_sha256_and_refuses_what_is_no_training_checkpoint(tmp_path):
    state = {'model.w': torch.arange(6.).view(2, 3), 'model.b': torch.ones(3), 'teacher.w': torch.zeros(2)}
    kept, dropped = network_state_dict({'state_dict': state}, 'model.')
    assert sorted(kept) == ['b', 'w'] and dropped == ['teacher.w']
    written = publish(kept, tmp_path / 'out' / 'net')
    assert [p.suffix for p, _ in written] == ['.safetensors', '.pth']
    for path, digest in written:
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and path.stem == f'net-{digest[:8]}'
    from attnzoo.utils.checkpoint import load_checkpoint
    for path, _ in written:
        loaded = load_checkpoint(path)
        assert sorted(loaded) == ['b', 'w'] and torch.equal(loaded['w'], state['model.w'])
    assert not list((tmp_path / 'out').glob('*.part*'))
    with pytest.raises(ValueError, match="no 'state_dict'"):
        network_state_dict({'w': torch.ones(1)}, 'model.')
    with pytest.raises(ValueError, match=r"--prefix 'net\.' matches no key.*\['model\.', 'teacher\.'\]"):
        network_state_dict({'state_dict': state}, 'net.')


def test_load_from_takes_a_bare_network_state_dict_as_the_task_model_keys():
    from mmengine.registry import MODELS

    import attnzoo.tasks  # noqa: F401  (registers TimmClassifier)
    from attnzoo.tasks.runner import as_task_checkpoint
    task = MODELS.build(dict(type='TimmClassifier', model_name='test_vit', num_classes=3))
    bare = task.model.state_dict()
    assert as_task_checkpoint(task, bare) == {'state_dict': {f'model.{k}': v for k, v in bare.items()}}
    for other in ({'state_dict': task.state_dict(), 'meta': {}}, task.state_dict(), {'model': bare}):
        assert as_task_checkpoint(task, other) is other


@pytest.mark.slow
def test_digits_demo_published_with_ema_reloads_through_timm_with_the_same_outputs(tmp_path):
    import timm
    from mmengine.config import Config

    import attnzoo.tasks  # noqa: F401  (registers TimmClassifier)
    from attnzoo.utils.checkpoint import load_checkpoint
    from mmengine.registry import MODELS

    cfg_path = tmp_path / 'digits_ema.py'
    cfg_path.write_text(f'_base_ = {str(DEMO)!r}\n' + EMA_HOOKS)
    small = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=64']
    _tool('train', cfg_path, '--work-dir', 'wd', *small, cwd=tmp_path)
    ckpt_path = tmp_path / 'wd' / 'epoch_1.pth'
    out = _tool('publish', ckpt_path, '--out', tmp_path / 'release' / 'digits', cwd=tmp_path)
    assert 'EMA weights' in out
    files = [Path(p) for p in re.findall(r'^(\S+\.(?:safetensors|pth))  sha256=[0-9a-f]{64}$', out, re.M)]
    assert [f.suffix for f in files] == ['.safetensors', '.pth']

    # the published weights are the EMA ones: those of the checkpoint's state_dict, not the raw ones EMAHook
    # moved to ema_state_dict
    checkpoint = load_checkpoint(ckpt_path)
    published = load_checkpoint(files[0])
    raw = {k[len('module.model.'):]: v for k, v in checkpoint['ema_state_dict'].items() if k.startswith('module.')}
    name = 'head.fc.weight'
    assert torch.equal(published[name], checkpoint['state_dict'][f'model.{name}'])
    assert not torch.equal(published[name], raw[name])

    cfg = Config.fromfile(str(cfg_path))
    task_model = MODELS.build(cfg.model)
    task_model.load_state_dict(checkpoint['state_dict'])
    task_model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = task_model.model(x)
        for path in files:
            model = timm.create_model(cfg.model.model_name, pretrained=True, num_classes=10,
                                      pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                                      **cfg.model.model_kwargs).eval()
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)

    # load_from takes it too (EMAHook included): fine-tuning starts from the published weights
    tuned = _tool('train', cfg_path, '--work-dir', 'wd_ft', *small, f'load_from={files[0]}', cwd=tmp_path)
    assert f'Load checkpoint from {files[0]}' in tuned

    # tools/test.py takes the published safetensors (a bare state dict) like the training checkpoint
    top1 = [re.search(r'Final: top1=([\d.]+)', _tool('test', cfg_path, weights, '--work-dir', 'wd_test',
                                                        cwd=tmp_path)).group(1)
            for weights in (ckpt_path, files[0])]
    assert top1[0] == top1[1]
