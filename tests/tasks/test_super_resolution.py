"""Super-resolution task: BasicSR-exact bicubic + metrics (pinned values), datasets, model wrapper, metric."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnzoo  # noqa: F401
from attnzoo.tasks import super_resolution as sr

SR_DIR = Path(__file__).resolve().parents[2].parent / 'shared' / 'sr'


# ------------------------------------------------------------------------------------------------------------------
# pinned reference values
# ------------------------------------------------------------------------------------------------------------------
def test_baboon_bicubic_x4_matches_basicsr():
    path = SR_DIR / 'baboon.png'
    if not path.is_file():
        pytest.skip(f'{path} not found (the Set14 baboon from BasicSR, see ../shared/sr/README.md)')
    hr = sr.read_image(str(path))
    assert hr.shape == (480, 492, 3)
    bic = sr.bicubic_upscale(sr.bicubic_degrade(hr, 4), 4)
    # BasicSR basicsr/metrics/README: Y 22.441898 / 0.453097, RGB 20.419710 / 0.391853 (crop 4)
    assert sr.calculate_psnr(bic, hr, 4, test_y_channel=True) == pytest.approx(22.441898, abs=1e-4)
    assert sr.calculate_ssim(bic, hr, 4, test_y_channel=True) == pytest.approx(0.453097, abs=1e-4)
    assert sr.calculate_psnr(bic, hr, 4, test_y_channel=False) == pytest.approx(20.419710, abs=1e-4)
    assert sr.calculate_ssim(bic, hr, 4, test_y_channel=False) == pytest.approx(0.391853, abs=1e-4)


# Y-PSNR / Y-SSIM (crop = scale) of the bicubic baseline, ../shared/papers/dlgsanet_sr.md section 2.4
SKIMAGE_BASELINES = {
    ('astronaut', 2): (31.7127, 0.9458), ('astronaut', 3): (28.6834, 0.8936), ('astronaut', 4): (26.8439, 0.8429),
    ('chelsea', 2): (35.2586, 0.9160), ('chelsea', 3): (32.8912, 0.8542), ('chelsea', 4): (31.4758, 0.8064),
    ('coffee', 2): (30.5966, 0.8861), ('coffee', 3): (28.4070, 0.8135), ('coffee', 4): (27.2921, 0.7649),
}
# sha256[:12] of the RGB uint8 LR arrays made by BasicSR (float32). astronaut x2 / x4 are left out: a float64
# imresize rounds a few values that sit at .5 the other way (allowed by the notes; PSNR/SSIM still match).
LR_SHA = {('astronaut', 3): '36f22d6f37e7', ('chelsea', 2): '277ea8b87cee', ('chelsea', 3): '1c4537b7f006',
          ('chelsea', 4): '548be666133d', ('coffee', 2): '83c3778b2ef7', ('coffee', 3): 'bda9a6c250c5',
          ('coffee', 4): '542cca2311c7'}


@pytest.mark.parametrize('name', ['astronaut', 'chelsea', 'coffee'])
def test_skimage_photo_baselines(name):
    data = pytest.importorskip('skimage.data', reason='scikit-image not installed (pip install "attnzoo[sr]")')
    img = getattr(data, name)()
    for s in (2, 3, 4):
        hr = sr.modcrop(img, s)
        lr = sr.bicubic_degrade(hr, s)
        bic = sr.bicubic_upscale(lr, s)
        psnr, ssim = SKIMAGE_BASELINES[(name, s)]
        assert round(sr.calculate_psnr(bic, hr, s), 4) == pytest.approx(psnr, abs=1.1e-4)
        assert round(sr.calculate_ssim(bic, hr, s), 4) == pytest.approx(ssim, abs=1.1e-4)
        if (name, s) in LR_SHA:
            assert hashlib.sha256(lr.tobytes()).hexdigest()[:12] == LR_SHA[(name, s)]


# ------------------------------------------------------------------------------------------------------------------
# imresize / metrics properties
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_imresize_interior_matches_torch_antialiased_bicubic(scale):
    # same kernel (a = -0.5); torch differs only near the borders
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (36, 48, 3))
    t = torch.from_numpy(img.transpose(2, 0, 1))[None]
    down = sr.imresize(img, 1 / scale)
    assert down.shape == (36 // scale, 48 // scale, 3)
    ref = F.interpolate(t, scale_factor=1 / scale, mode='bicubic', antialias=True, align_corners=False)
    ref = ref[0].numpy().transpose(1, 2, 0)
    assert np.abs(down - ref)[2:-2, 2:-2].max() < 1e-6
    up = sr.imresize(img, scale)
    ref = F.interpolate(t, scale_factor=scale, mode='bicubic', antialias=True, align_corners=False)
    b = 2 * scale
    assert np.abs(up - ref[0].numpy().transpose(1, 2, 0))[b:-b, b:-b].max() < 1e-6
    # constant images stay constant (weights normalised, symmetric borders)
    assert np.allclose(sr.imresize(np.full((10, 7), 3.0), 1 / scale), 3.0)


def test_metric_basics_and_errors():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert sr.calculate_psnr(a, a, 2) == float('inf')
    assert sr.calculate_ssim(a, a, 2) == pytest.approx(1.0)
    b = a.copy()
    b[5, 5, 0] ^= 1
    assert sr.calculate_psnr(a, b, 0, test_y_channel=False) == pytest.approx(10 * np.log10(255 ** 2 * a.size))
    # Y is the BT.601 studio-range luma: white -> 235, black -> 16
    assert sr.rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0, abs=1e-4)
    assert sr.rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    with pytest.raises(ValueError, match='shapes differ'):
        sr.calculate_psnr(a, a[:10], 2)


# ------------------------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------------------------
def _block_images(rng, h, w, s):
    lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.kron(lr, np.ones((s, s, 1), dtype=np.uint8)), lr


def test_benchmark_layout_sets_and_generated_lr(tmp_path):
    rng = np.random.default_rng(0)
    s = 4
    for set_name, n in (('Set5', 2), ('Set14', 3)):
        for i in range(n):
            hr, lr = _block_images(rng, 9 + i, 11, s)
            sr.write_image(str(tmp_path / set_name / 'HR' / f'img{i}.png'), hr)
            if set_name == 'Set5':  # Set14 has no LR folder: generated with MATLAB bicubic
                sr.write_image(str(tmp_path / set_name / 'LR_bicubic' / 'X4' / f'img{i}x4.png'), lr)
    ds = sr.PairedSRDataset(str(tmp_path), scale=s, layout='benchmark', sets=['Set5', 'Set14'])
    assert len(ds) == 5 and ds.metainfo['datasets'] == ('Set5', 'Set14')
    item = ds[0]
    assert item['inputs'].shape == (3, 9, 11) and item['data_samples']['gt'].shape == (3, 36, 44)
    assert item['data_samples']['dataset'] == 'Set5' and item['data_samples']['name'] == 'img0'
    hr, lr = ds.load_pair(2)  # Set5 holds items 0-1
    assert np.array_equal(lr, sr.bicubic_degrade(sr.read_image(str(tmp_path / 'Set14/HR/img0.png')), s))
    with pytest.raises(FileNotFoundError, match='HR folder'):
        sr.PairedSRDataset(str(tmp_path), scale=s, layout='benchmark', sets=['Urban100'])


def test_div2k_layout_paired_random_crop_alignment(tmp_path):
    rng = np.random.default_rng(1)
    s = 3
    for i in range(2):
        hr, lr = _block_images(rng, 20, 17, s)
        sr.write_image(str(tmp_path / 'DIV2K_train_HR' / f'{i:04d}.png'), hr)
        sr.write_image(str(tmp_path / 'DIV2K_train_LR_bicubic' / 'X3' / f'{i:04d}x3.png'), lr)
    ds = sr.PairedSRDataset(str(tmp_path), scale=s, layout='div2k', split='train', patch_size=8 * s, repeat=3, seed=0)
    assert len(ds) == 6
    for i in range(30):
        item = ds[i % len(ds)]
        lr, gt = item['inputs'], item['data_samples']['gt']
        assert lr.shape == (3, 8, 8) and gt.shape == (3, 24, 24)
        # block-constant HR: the HR patch subsampled is the LR patch under every flip / transpose
        assert torch.equal(gt[:, ::s, ::s], lr)
    with pytest.raises(ValueError, match='multiple of scale'):
        sr.PairedSRDataset(str(tmp_path), scale=s, layout='div2k', patch_size=25)


# ------------------------------------------------------------------------------------------------------------------
# model wrapper + metric + registries
# ------------------------------------------------------------------------------------------------------------------
def test_registries():
    from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
    assert MODELS.get('SRModel') is sr.SRModel
    assert DATASETS.get('PairedSRDataset') is sr.PairedSRDataset
    assert METRICS.get('SRMetric') is sr.SRMetric
    assert HOOKS.get('SRSummaryHook') is sr.SRSummaryHook


def test_srmodel_loss_predict_and_metric():
    model = sr.SRModel('dlgsanet_tiny_x2', model_kwargs=dict(dim=12, groups=1, blocks=1, num_heads=2))
    assert model.scale == 2
    x = torch.rand(2, 3, 10, 12)
    gt = torch.rand(2, 3, 20, 24)
    samples = dict(gt=gt, name=['a', 'b'], dataset=['S1', 'S2'])
    loss = model(x, samples, mode='loss')['loss']
    loss.backward()
    assert loss.item() > 0
    model.eval()
    preds = model(x, samples, mode='predict')
    assert preds[0]['pred'].shape == (20, 24, 3) and preds[0]['pred'].dtype == np.uint8
    assert preds[1]['name'] == 'b' and preds[1]['dataset'] == 'S2'
    metric = sr.SRMetric(scale=2, bicubic=True)
    metric.process(None, preds)
    out = metric.compute_metrics(metric.results)
    assert {'psnr', 'ssim', 'psnr_bicubic', 'ssim_bicubic', 'psnr_gain', 'S1/psnr', 'S2/ssim'} <= set(out)
    tiled = sr.SRModel('dlgsanet_tiny_x2', model_kwargs=dict(dim=12, groups=1, blocks=1, num_heads=2), tile=6)
    tiled.load_state_dict(model.state_dict())
    tiled.eval()
    assert tiled(x, samples, mode='predict')[0]['pred'].shape == (20, 24, 3)
    with pytest.raises(ValueError, match='not a registered'):
        sr.SRModel('dlgsanet_nope_x2')
    with pytest.raises(ValueError, match='super-resolution'):
        sr.SRModel('resnet18')


def test_summary_line():
    line = sr.format_sr_summary({'psnr': 32.1, 'ssim': 0.91, 'psnr_bicubic': 31.7, 'psnr_gain': 0.4}, 3.0, iters=5)
    assert line.startswith('Final: psnr=32.1000 ssim=0.9100 psnr_bicubic=31.7000 psnr_gain=0.40 iters=5 time=3.0s')
