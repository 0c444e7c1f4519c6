"""tools/train.py + tools/test.py on the super-resolution configs (subprocesses), tools/sr.py (in-process); (slow)
the scikit-image astronaut demo must beat bicubic."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'super_resolution' / 'demo_astronaut.py'
TRAIN = REPO / 'tools' / 'train.py'
TEST = REPO / 'tools' / 'test.py'
# a 3 K-parameter network, 2 iterations, validation on the small photos
TINY = ['model.model_kwargs.dim=6', 'model.model_kwargs.groups=1', 'model.model_kwargs.blocks=1',
        'model.model_kwargs.num_heads=1', 'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2']


def run(args, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise AssertionError(f'exit {proc.returncode}\n{proc.stdout[-6000:]}')
    return proc.stdout


def final(out):
    m = re.search(r'Final: psnr=([\d.]+) ssim=([\d.]+) psnr_bicubic=([\d.]+) ssim_bicubic=([\d.]+) '
                  r'psnr_gain=(-?[\d.]+)', out)
    assert m, out[-3000:]
    return [float(g) for g in m.groups()]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """Small HR photos (train: 3 crops, val: one) in the demo's hr_only layout."""
    pytest.importorskip('skimage.data', reason='scikit-image not installed (pip install "attnzoo[sr]")')
    from skimage import data

    from attnzoo.tasks.super_resolution import write_image
    root = tmp_path_factory.mktemp('photos')
    for i, name in enumerate(('chelsea', 'coffee', 'rocket')):
        write_image(str(root / 'train' / f'{name}.png'), getattr(data, name)()[:64, :64])
    write_image(str(root / 'val' / 'astronaut.png'), data.astronaut()[100:164, 200:260])
    return root


def test_train_test_and_sr_tool(photos, tmp_path):
    wd = tmp_path / 'wd'
    out = run([TRAIN, DEMO, '--work-dir', wd, '--data-root', photos, '--cfg-options', *TINY], cwd=tmp_path)
    assert 'Iter(train) [2/2]' in out
    psnr, ssim, psnr_bic, ssim_bic, gain = final(out)
    from attnzoo.tasks import super_resolution as sr
    hr = sr.read_image(str(photos / 'val' / 'astronaut.png'))
    expected = sr.calculate_psnr(sr.bicubic_upscale(sr.bicubic_degrade(hr, 2), 2), hr, 2)
    assert psnr_bic == pytest.approx(expected, abs=1e-4) and gain == pytest.approx(psnr - psnr_bic, abs=0.02)
    ckpt = wd / 'iter_2.pth'
    assert ckpt.is_file()
    out = run([TEST, DEMO, ckpt, '--work-dir', wd, '--data-root', photos, '--cfg-options', *TINY[:4]], cwd=tmp_path)
    assert final(out)[2] == pytest.approx(psnr_bic) and 'images=1' in out

    # tools/sr.py (in-process) with the trained checkpoint (mmengine format), on the HR photo degraded first
    out_png = tmp_path / 'sr.png'
    sr_main([str(photos / 'val' / 'astronaut.png'), '--model', 'dlgsanet_tiny_x2', '--scale', '2', '--checkpoint',
             str(ckpt), '--out', str(out_png), '--degrade', '--tile', '0', '--model-kwargs', 'dim=6', 'groups=1',
             'blocks=1', 'num_heads=1', '--device', 'cpu'])
    assert sr.read_image(str(out_png)).shape == (64, 60, 3)
    # the trained weights give the PSNR that tools/train.py's validation reported
    assert sr.calculate_psnr(sr.read_image(str(out_png)), hr, 2) == pytest.approx(psnr, abs=2e-4)


def sr_main(argv):
    from attnzoo.cli.sr import main
    return main(argv)


def test_sr_tool_official_checkpoint_and_errors(tmp_path, capsys):
    import timm

    import attnzoo  # noqa: F401
    from attnzoo.tasks.super_resolution import read_image, write_image
    sys.path.insert(0, str(REPO / 'tests' / 'models'))
    from test_dlgsanet import official_like_state_dict
    kw = ['dim=12', 'groups=1', 'blocks=1', 'num_heads=2']
    model = timm.create_model('dlgsanet_tiny_x3', dim=12, groups=1, blocks=1, num_heads=2)
    ckpt = tmp_path / 'official.pth'
    torch.save({'params': official_like_state_dict(model), 'params_ema': official_like_state_dict(model)}, ckpt)
    img = tmp_path / 'lr.png'
    write_image(str(img), np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8))
    out = sr_main([str(img), '--model', 'dlgsanet_tiny_x3', '--checkpoint', str(ckpt), '--device', 'cpu',
                   '--model-kwargs', *kw])
    assert '14x10 -> 42x30' in capsys.readouterr().out
    assert out == str(tmp_path / 'lr_dlgsanet_tiny_x3.png') and read_image(out).shape == (30, 42, 3)
    with pytest.raises(SystemExit, match='does not match'):
        sr_main([str(img), '--model', 'dlgsanet_tiny_x3', '--scale', '4'])
    with pytest.raises(SystemExit, match='not a super-resolution'):
        sr_main([str(img), '--model', 'resnet18'])


@pytest.mark.slow
def test_demo_beats_bicubic(tmp_path):
    pytest.importorskip('skimage.data', reason='scikit-image not installed (pip install "attnzoo[sr]")')
    out = run([TRAIN, DEMO, '--work-dir', tmp_path / 'wd', '--cfg-options', f'sr_photos_root={tmp_path}/photos',
               f'train_dataloader.dataset.data_root={tmp_path}/photos',
               f'val_dataloader.dataset.data_root={tmp_path}/photos',
               f'test_dataloader.dataset.data_root={tmp_path}/photos'], cwd=tmp_path, timeout=1800)
    psnr, ssim, psnr_bic, ssim_bic, gain = final(out)
    assert psnr_bic == pytest.approx(31.7127, abs=1e-4) and ssim_bic == pytest.approx(0.9458, abs=1e-4)
    assert gain > 0, out[-2000:]


def test_sr_tool_refuses_to_overwrite_its_input_and_misfit_or_untrusted_weights(tmp_path):
    import timm

    import attnzoo  # noqa: F401
    from attnzoo.tasks.super_resolution import read_image, write_image
    from attnzoo.utils.checkpoint import CheckpointError
    kw = ['--model-kwargs', 'dim=6', 'groups=1', 'blocks=1', 'num_heads=1']
    img = tmp_path / 'lr.png'
    pixels = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    write_image(str(img), pixels)
    with pytest.raises(SystemExit, match='is the input image itself; pass --overwrite'):
        sr_main([str(img), '--model', 'dlgsanet_tiny_x2', '--out', str(img), '--device', 'cpu', *kw])
    assert np.array_equal(read_image(str(img)), pixels)  # untouched
    assert sr_main([str(img), '--model', 'dlgsanet_tiny_x2', '--out', str(img), '--overwrite', '--device', 'cpu',
                    *kw]) == str(img) and read_image(str(img)).shape == (20, 28, 3)

    other = timm.create_model('dlgsanet_tiny_x2', dim=12, groups=1, blocks=1, num_heads=1)  # another width
    wide = tmp_path / 'wide.pth'
    torch.save(other.state_dict(), wide)
    with pytest.raises(CheckpointError, match='does not fit DLGSANet'):
        sr_main([str(img), '--model', 'dlgsanet_tiny_x2', '--checkpoint', str(wide), '--out', str(tmp_path / 'o.png'),
                 '--device', 'cpu', *kw])
    code = tmp_path / 'code.pth'
    torch.save({'params': other.state_dict(), 'hook': os.getpid}, code)
    with pytest.raises(CheckpointError, match='needs full unpickling.*--trust-checkpoint'):
        sr_main([str(img), '--model', 'dlgsanet_tiny_x2', '--checkpoint', str(code), '--device', 'cpu', *kw])
