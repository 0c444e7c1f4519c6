"""Image super-resolution on mmengine's Runner: paired LR/HR folders, MATLAB-style bicubic degradation, L1 loss,
PSNR / SSIM on the BT.601 Y channel computed as BasicSR computes them.

Registered in mmengine's root registries (a config names them by ``type``):

* ``MODELS``: :class:`SRModel` -- ``timm.create_model(model_name, **model_kwargs)`` (any attnzoo SR network, e.g.
  ``dlgsanet_tiny_x4``), L1 loss in training; in val/test the SR output is clamped, rounded to uint8 and compared
  with the ground truth (optionally tile by tile, ``tile=``).
* ``DATASETS``: :class:`PairedSRDataset` -- DIV2K (``DIV2K_train_HR`` + ``DIV2K_train_LR_bicubic/X4/0001x4.png``)
  and benchmark (``Set5/HR`` + ``Set5/LR_bicubic/X4/babyx4.png``; Set5/Set14/B100/Urban100/Manga109) layouts, or
  any ``hr_dir`` / ``lr_dir`` / ``filename_tmpl``. A missing LR folder is generated in memory with
  :func:`imresize` (MATLAB ``imresize(HR, 1/s, 'bicubic')``, rounded to uint8). Training: paired random crop of an
  LR ``patch_size // scale`` patch, random h-flip / v-flip / transpose (BasicSR's ``augment``).
* ``METRICS``: :class:`SRMetric` -- mean per-image PSNR / SSIM, per dataset and overall, optionally with the
  bicubic baseline on the same LR inputs.
* ``HOOKS``: :class:`SRSummaryHook` -- ``Final: psnr=.. ssim=.. [psnr_bicubic=.. gain=..] ... time=..s``.

The metric functions are a re-implementation of BasicSR's ``calculate_psnr`` / ``calculate_ssim`` /
``to_y_channel`` and ``matlab_functions.imresize`` (XPixelGroup/BasicSR, Apache-2.0): Y = 16 + 65.481 R + 128.553 G
+ 24.966 B on [0, 1] RGB (studio range, not rounded), ``crop_border`` px removed on every side, PSNR with peak 255,
SSIM with an 11x11 Gaussian (sigma 1.5) in 'valid' mode, K = (0.01, 0.03). Images are uint8 RGB ``HxWx3`` arrays.
On Set14 baboon x4 (bicubic) they give Y-PSNR 22.441898 / Y-SSIM 0.453097, BasicSR's published values.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import timm
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS

from ..models.dense import check_model_name
from ._common import SummaryHook, final_line
from .demo_data import prepare_dataset

__all__ = [
    'imresize', 'bicubic_degrade', 'bicubic_upscale', 'modcrop', 'rgb_to_y', 'calculate_psnr', 'calculate_ssim',
    'read_image', 'write_image', 'SRModel', 'PairedSRDataset', 'SRMetric', 'SRSummaryHook',
    'format_sr_summary', 'IMG_EXTENSIONS',
]

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


# --------------------------------------------------------------------------------------------
# MATLAB-style bicubic resize
# --------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel, a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    """``out_len x in_len`` matrix of MATLAB's bicubic ``imresize`` along one axis, symmetric borders folded in."""
    width = 4.0
    aa = scale < 1 and antialiasing
    if aa:
        width = width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if aa else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # 1-based indices -> 0-based, mirrored at the borders ('symmetric': the edge pixel repeats)
    idx = idx.astype(np.int64) - 1
    period = 2 * in_len
    idx = np.mod(idx, period)
    idx = np.where(idx >= in_len, period - 1 - idx, idx)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), p), idx.ravel()), weights.ravel())
    return mat


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (BasicSR's ``matlab_functions.imresize``), float64, not rounded.

    Args:
        img: ``H x W`` or ``H x W x C`` array (any range; uint8 is converted to float).
        scale: factor, the same for both axes; output size ``ceil(H * scale) x ceil(W * scale)``.
        antialiasing: widen the kernel when downscaling (MATLAB's default).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim not in (2, 3):
        raise ValueError(f'img must be HxW or HxWxC, got shape {img.shape}')
    h, w = img.shape[:2]
    mh = _resize_matrix(h, int(math.ceil(h * scale)), scale, antialiasing)
    mw = _resize_matrix(w, int(math.ceil(w * scale)), scale, antialiasing)
    out = np.tensordot(mh, img, axes=(1, 0))  # H first, then W (as MATLAB / BasicSR)
    out = np.tensordot(mw, out, axes=(1, 1)).swapaxes(0, 1)
    return np.ascontiguousarray(out)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so both sides are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def bicubic_degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The standard "BI" LR image: MATLAB bicubic ``1/scale`` of uint8 ``hr`` (mod-cropped first), rounded to
    uint8."""
    return _to_uint8(imresize(modcrop(hr, scale), 1.0 / scale))


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic ``x scale`` of uint8 ``lr``, rounded to uint8 (the bicubic baseline)."""
    return _to_uint8(imresize(lr, scale))


# --------------------------------------------------------------------------------------------
# metrics (BasicSR's definitions)
# --------------------------------------------------------------------------------------------
_Y_RGB = np.array([65.481, 128.553, 24.966])


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-range Y (16..235, not rounded) of a uint8 RGB ``HxWx3`` image, as BasicSR's
    ``to_y_channel`` (colour conversion from float32 [0, 1])."""
    x = img.astype(np.float32) / 255.
    y = np.dot(x, _Y_RGB) + 16.0
    return y / 255. * 255.


def _prepare_pair(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool):
    if img.shape != img2.shape:
        raise ValueError(f'image shapes differ: {img.shape} vs {img2.shape}')
    if crop_border < 0:
        raise ValueError(f'crop_border must be >= 0, got {crop_border}')
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'test_y_channel needs RGB HxWx3 images, got shape {img.shape}')
        img, img2 = rgb_to_y(img)[..., None], rgb_to_y(img2)[..., None]
    img = img.astype(np.float64)
    img2 = img2.astype(np.float64)
    if img.ndim == 2:
        img, img2 = img[..., None], img2[..., None]
    return img, img2


def calculate_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR (dB, peak 255) of two uint8 ``HxWx3`` RGB images after removing ``crop_border`` px per side."""
    img, img2 = _prepare_pair(img, img2, crop_border, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    return float('inf') if mse == 0 else float(10. * np.log10(255. * 255. / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 image with the 1-D window ``g`` on both axes."""
    k = len(g)
    h, w = img.shape
    rows = sum(g[i] * img[i:h - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j:w - k + 1 + j] for j in range(k))


def _ssim_single(img: np.ndarray, img2: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu1, mu2 = _filter_valid(img, g), _filter_valid(img2, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 ** 2, mu2 ** 2, mu1 * mu2
    s1 = _filter_valid(img ** 2, g) - mu1_sq
    s2 = _filter_valid(img2 ** 2, g) - mu2_sq
    s12 = _filter_valid(img * img2, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def calculate_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """SSIM (Wang et al.; BasicSR / MATLAB ``ssim_index``) of two uint8 images, mean over channels."""
    img, img2 = _prepare_pair(img, img2, crop_border, test_y_channel)
    return float(np.mean([_ssim_single(img[..., c], img2[..., c]) for c in range(img.shape[2])]))


# --------------------------------------------------------------------------------------------
# image I/O
# --------------------------------------------------------------------------------------------
def read_image(path: str) -> np.ndarray:
    """uint8 RGB ``HxWx3`` array of an image file."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB')).copy()


def write_image(path: str, img: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    Image.fromarray(img).save(path)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.)


def _to_uint8_image(t: torch.Tensor) -> np.ndarray:
    """BasicSR's ``tensor2img``: clamp to [0, 1], x255, round, uint8, ``HxWx3``."""
    return t.detach().float().clamp(0, 1).mul(255.).round().byte().permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
def _sr_scale(model: nn.Module, model_name: str) -> int:
    scale = getattr(model, 'scale', None) or (getattr(model, 'pretrained_cfg', None) or {}).get('scale')
    if not scale:
        raise ValueError(f'{model_name}: not a super-resolution model (no `scale` attribute or pretrained_cfg)')
    return int(scale)


@MODELS.register_module()
class SRModel(BaseModel):
    """A timm super-resolution network as an mmengine model.

    Args:
        model_name: registered SR model (``dlgsanet_tiny_x4``, ...).
        model_kwargs: passed to ``timm.create_model`` (architecture overrides, ``pretrained``,
            ``pretrained_cfg_overlay=dict(file=...)``).
        loss: ``'l1'`` (the official recipe) or ``'mse'``.
        tile: if set, val/test run ``tiled_inference`` with this LR tile size (``tile_pad`` context).

    ``forward(inputs, data_samples, mode)``: ``inputs`` are LR batches ``[B, 3, h, w]`` in [0, 1];
    ``data_samples`` a dict with ``gt`` (``[B, 3, s*h, s*w]``), ``name`` and ``dataset`` lists. ``'loss'`` gives
    ``{'loss': L1}``; ``'predict'`` a list of ``dict(pred, gt, lr, name, dataset)`` (uint8 HWC arrays);
    ``'tensor'`` the raw SR batch.
    """

    def __init__(self, model_name: str, model_kwargs: Optional[dict] = None, loss: str = 'l1',
                 tile: Optional[int] = None, tile_pad: int = 16, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        check_model_name(model_name)
        losses = {'l1': nn.L1Loss(), 'mse': nn.MSELoss()}
        if loss not in losses:
            raise ValueError(f'loss must be one of {sorted(losses)}, got {loss!r}')
        self.model_name = model_name
        self.model = timm.create_model(model_name, **(model_kwargs or {}))
        self.scale = _sr_scale(self.model, model_name)
        self.pixel_loss = losses[loss]
        self.tile = tile
        self.tile_pad = tile_pad

    def init_weights(self):
        pass  # timm networks initialise (or load weights) in their constructor

    def no_weight_decay(self):
        fn = getattr(self.model, 'no_weight_decay', None)
        return {f'model.{n}' for n in fn()} if fn is not None else set()

    def forward(self, inputs: torch.Tensor, data_samples: Optional[dict] = None, mode: str = 'tensor'):
        if mode == 'loss':
            if data_samples is None or 'gt' not in data_samples:
                raise ValueError("mode='loss' needs data_samples with the ground truth under 'gt'")
            return dict(loss=self.pixel_loss(self.model(inputs).float(), data_samples['gt'].float()))
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.model(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    @torch.no_grad()
    def super_resolve(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.tile:
            from attnzoo.models.dlgsanet import tiled_inference
            return tiled_inference(self.model, inputs, self.scale, self.tile, self.tile_pad)
        return self.model(inputs)

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, data_samples: Optional[dict] = None) -> List[dict]:
        sr = self.super_resolve(inputs)
        data_samples = data_samples or {}
        out = []
        for i in range(len(sr)):
            item = dict(pred=_to_uint8_image(sr[i]), lr=_to_uint8_image(inputs[i]))
            if 'gt' in data_samples:
                item['gt'] = _to_uint8_image(data_samples['gt'][i])
            for key in ('name', 'dataset'):
                if key in data_samples:
                    item[key] = data_samples[key][i]
            out.append(item)
        return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
_LAYOUTS = {
    # DIV2K as distributed: DIV2K_train_HR/0001.png, DIV2K_train_LR_bicubic/X4/0001x4.png
    'div2k': dict(hr_dir='DIV2K_{split}_HR', lr_dir='DIV2K_{split}_LR_bicubic/X{scale}', filename_tmpl='{}x{scale}'),
    # BasicSR's extracted sub-images: DIV2K_train_HR_sub/0001_s001.png, .../X4_sub/0001_s001.png
    'div2k_sub': dict(hr_dir='DIV2K_{split}_HR_sub', lr_dir='DIV2K_{split}_LR_bicubic/X{scale}_sub',
                      filename_tmpl='{}'),
    # EDSR benchmark.tar: Set5/HR/baby.png, Set5/LR_bicubic/X4/babyx4.png (Set14, B100, Urban100, Manga109 alike)
    'benchmark': dict(hr_dir='HR', lr_dir='LR_bicubic/X{scale}', filename_tmpl='{}x{scale}'),
    # HR images only, LR made on the fly
    'hr_only': dict(hr_dir='{split}', lr_dir=None, filename_tmpl='{}'),
}


def _list_images(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS))


@DATASETS.register_module()
class PairedSRDataset(torch.utils.data.Dataset):
    """Paired LR/HR image folders for x``scale`` super-resolution.

    Args:
        data_root: folder holding the HR / LR folders (for ``sets``: holding one folder per set).
        scale: upscaling factor.
        layout: ``'div2k'``, ``'div2k_sub'``, ``'benchmark'``, ``'hr_only'`` (see ``_LAYOUTS``); explicit
            ``hr_dir`` / ``lr_dir`` / ``filename_tmpl`` win. ``{split}`` and ``{scale}`` are filled in.
        split: used in the layouts' folder names (``train`` / ``valid``).
        hr_dir, lr_dir: folders relative to ``data_root``; with ``lr_dir=None`` or a missing LR folder the LR images
            are generated (MATLAB bicubic of the mod-cropped HR, rounded to uint8) and kept in memory.
        filename_tmpl: LR file stem from the HR stem (``'{}x{scale}'``: ``0001.png`` -> ``0001x4.png``).
        sets: benchmark sets (``['Set5', 'Set14', ...]``) under ``data_root``; each item is tagged with its set.
        name: tag of the items (default: the last folder name of ``data_root``).
        patch_size: HR training patch (``scale * 48`` in the official recipe); ``None`` returns whole images.
        use_hflip, use_rot: BasicSR augmentation (h-flip, and v-flip + transpose) for training patches.
        repeat: repeat the image list (BasicSR's ``dataset_enlarge_ratio``).
        cache: keep decoded images in memory.
        prepare: ``'skimage_photos'`` (or a dict with its kwargs) writes the scikit-image demo photos into
            ``data_root`` if ``data_root`` is missing.
        seed: seed of the crops / flips (combined with the DDP rank and the DataLoader worker id); default: torch's
            seed of the process / worker.

    Items: ``dict(inputs=LR [3, h, w] float in [0, 1], data_samples=dict(gt=HR [3, s*h, s*w], name, dataset))``;
    the HR is cropped to ``s * LR`` size (BasicSR's validation convention).
    """

    def __init__(self, data_root: str, scale: int, layout: str = 'benchmark', split: str = 'train',
                 hr_dir: Optional[str] = None, lr_dir: Union[None, str, bool] = False,
                 filename_tmpl: Optional[str] = None, sets: Optional[Sequence[str]] = None,
                 name: Optional[str] = None, patch_size: Optional[int] = None, use_hflip: bool = True,
                 use_rot: bool = True, repeat: int = 1, cache: bool = True,
                 prepare: Union[None, str, dict] = None, seed: Optional[int] = None):
        if prepare:
            prepare_dataset('super_resolution', data_root, prepare, needed=not osp.isdir(data_root))
        if layout not in _LAYOUTS:
            raise ValueError(f'layout must be one of {sorted(_LAYOUTS)}, got {layout!r}')
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f'scale must be a positive int, got {scale!r}')
        if patch_size is not None and (patch_size % scale or patch_size < scale):
            raise ValueError(f'patch_size (HR) must be a positive multiple of scale={scale}, got {patch_size}')
        if repeat < 1:
            raise ValueError(f'repeat must be >= 1, got {repeat}')
        preset = _LAYOUTS[layout]
        fill = dict(split=split, scale=scale)
        hr_dir = (hr_dir if hr_dir is not None else preset['hr_dir']).format(**fill)
        lr_dir = preset['lr_dir'] if lr_dir is False else lr_dir
        lr_dir = lr_dir.format(**fill) if lr_dir else None
        tmpl = (filename_tmpl if filename_tmpl is not None else preset['filename_tmpl']).replace('{scale}', str(scale))
        self.scale = scale
        self.patch_size = patch_size
        self.use_hflip = use_hflip
        self.use_rot = use_rot
        self.cache = cache
        self.seed = seed
        self._rng: Optional[np.random.Generator] = None
        self._rng_owner: Optional[tuple] = None
        roots = [(osp.join(data_root, s), s) for s in sets] if sets else \
            [(data_root, name or osp.basename(osp.normpath(data_root)))]
        self.items: List[Tuple[str, Optional[str], str, str]] = []  # (hr path, lr path or None, name, dataset)
        for root, tag in roots:
            hr_folder = osp.join(root, hr_dir)
            if not osp.isdir(hr_folder):
                raise FileNotFoundError(
                    f'HR folder {hr_folder!r} does not exist (layout={layout!r}: expected '
                    f'{osp.join(root, preset["hr_dir"])}, LR in {preset["lr_dir"]}; pass hr_dir/lr_dir to override)')
            lr_folder = osp.join(root, lr_dir) if lr_dir else None
            if lr_folder is not None and not osp.isdir(lr_folder):
                lr_folder = None  # generate from HR
            files = _list_images(hr_folder)
            if not files:
                raise FileNotFoundError(f'no images in {hr_folder!r}')
            for f in files:
                stem, ext = osp.splitext(f)
                lr_path = None
                if lr_folder is not None:
                    lr_path = osp.join(lr_folder, tmpl.format(stem) + ext)
                    if not osp.isfile(lr_path):
                        cands = [c for c in (osp.join(lr_folder, tmpl.format(stem) + e) for e in IMG_EXTENSIONS)
                                 if osp.isfile(c)]
                        if not cands:
                            raise FileNotFoundError(f'LR image for {f!r} not found: {lr_path!r} '
                                                    f'(filename_tmpl={tmpl!r})')
                        lr_path = cands[0]
                self.items.append((osp.join(hr_folder, f), lr_path, stem, tag))
        self.repeat = repeat
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self.metainfo = dict(datasets=tuple(dict.fromkeys(t for *_, t in self.items)), scale=scale)

    def __len__(self) -> int:
        return len(self.items) * self.repeat

    def load_pair(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 (HR, LR) of image ``index`` (HR cropped to ``scale * LR``)."""
        if index in self._cache:
            return self._cache[index]
        hr_path, lr_path, _, _ = self.items[index]
        hr = read_image(hr_path)
        lr = read_image(lr_path) if lr_path else bicubic_degrade(hr, self.scale)
        s = self.scale
        if hr.shape[0] < lr.shape[0] * s or hr.shape[1] < lr.shape[1] * s:
            raise ValueError(f'{hr_path}: HR {hr.shape[:2]} is smaller than scale x LR {lr.shape[:2]}')
        hr = np.ascontiguousarray(hr[:lr.shape[0] * s, :lr.shape[1] * s])
        if self.cache:
            self._cache[index] = (hr, lr)
        return hr, lr

    @property
    def rng(self) -> np.random.Generator:
        """Crop/flip generator, distinct per DDP rank and DataLoader worker (seeded from ``seed``, else from torch's
        per-worker seed)."""
        from mmengine.dist import get_rank
        info = torch.utils.data.get_worker_info()
        owner = (get_rank(), info.id if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            base = self.seed if self.seed is not None else torch.initial_seed() % (1 << 63)
            self._rng = np.random.default_rng([base, owner[0], owner[1] + 1])
            self._rng_owner = owner
        return self._rng

    def _random_patch(self, hr: np.ndarray, lr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        s, p = self.scale, self.patch_size // self.scale
        h, w = lr.shape[:2]
        if h < p or w < p:
            raise ValueError(f'LR image {h}x{w} is smaller than the LR patch {p}x{p}')
        top, left = int(self.rng.integers(0, h - p + 1)), int(self.rng.integers(0, w - p + 1))
        lr = lr[top:top + p, left:left + p]
        hr = hr[top * s:(top + p) * s, left * s:(left + p) * s]
        hflip = self.use_hflip and self.rng.random() < 0.5
        vflip = self.use_rot and self.rng.random() < 0.5
        rot90 = self.use_rot and self.rng.random() < 0.5
        out = []
        for img in (hr, lr):
            if hflip:
                img = img[:, ::-1]
            if vflip:
                img = img[::-1]
            if rot90:
                img = img.transpose(1, 0, 2)
            out.append(img)
        return out[0], out[1]

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.items)
        hr, lr = self.load_pair(i)
        if self.patch_size:
            hr, lr = self._random_patch(hr, lr)
        _, _, name, tag = self.items[i]
        return dict(inputs=_to_tensor(lr), data_samples=dict(gt=_to_tensor(hr), name=name, dataset=tag))


# --------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------
@METRICS.register_module()
class SRMetric(BaseMetric):
    """Mean per-image PSNR / SSIM (BasicSR definitions) of uint8 SR outputs.

    Keys: ``psnr``, ``ssim`` (over all images) and ``<dataset>/psnr``, ``<dataset>/ssim`` when the items come from
    several datasets; with ``bicubic=True`` also ``psnr_bicubic`` / ``ssim_bicubic`` (MATLAB-bicubic upscaling of
    the same uint8 LR input) and ``psnr_gain``.

    Args:
        crop_border: px removed on every side; default ``scale`` (the convention of the papers' tables).
        scale: needed when ``crop_border`` is left to default or ``bicubic=True``.
        test_y_channel: evaluate on BT.601 Y (True) or RGB.
    """
    default_prefix = None

    def __init__(self, scale: Optional[int] = None, crop_border: Optional[int] = None, test_y_channel: bool = True,
                 bicubic: bool = False, collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if crop_border is None and scale is None:
            raise ValueError('SRMetric needs scale (crop_border defaults to it) or an explicit crop_border')
        if bicubic and scale is None:
            raise ValueError('SRMetric(bicubic=True) needs scale')
        self.scale = scale
        self.crop_border = scale if crop_border is None else crop_border
        self.test_y_channel = test_y_channel
        self.bicubic = bicubic

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            r = dict(dataset=s.get('dataset', ''), name=s.get('name', ''),
                     psnr=calculate_psnr(s['pred'], s['gt'], self.crop_border, self.test_y_channel),
                     ssim=calculate_ssim(s['pred'], s['gt'], self.crop_border, self.test_y_channel))
            if self.bicubic:
                bic = bicubic_upscale(s['lr'], self.scale)
                r['psnr_bicubic'] = calculate_psnr(bic, s['gt'], self.crop_border, self.test_y_channel)
                r['ssim_bicubic'] = calculate_ssim(bic, s['gt'], self.crop_border, self.test_y_channel)
            self.results.append(r)

    def compute_metrics(self, results: list) -> dict:
        keys = ['psnr', 'ssim'] + (['psnr_bicubic', 'ssim_bicubic'] if self.bicubic else [])
        out = {k: float(np.mean([r[k] for r in results])) for k in keys}
        if self.bicubic:
            out['psnr_gain'] = out['psnr'] - out['psnr_bicubic']
        datasets = list(dict.fromkeys(r['dataset'] for r in results))
        if len(datasets) > 1:
            for d in datasets:
                for k in keys:
                    out[f'{d}/{k}'] = float(np.mean([r[k] for r in results if r['dataset'] == d]))
        return out


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------
def format_sr_summary(metrics: Optional[dict], seconds: float, **extra) -> str:
    """``Final: psnr=.. ssim=.. [psnr_bicubic=.. psnr_gain=..] [<set>/psnr=..] <extra> time=..s``."""
    metrics = metrics or {}
    parts = []
    for k, v in metrics.items():
        fmt = '.4f' if 'ssim' in k else '.2f' if 'gain' in k else '.4f'
        parts.append(f'{k}={float(v):{fmt}}')
    if not parts:
        parts = ['psnr=n/a', 'ssim=n/a']
    return final_line(parts, seconds, **extra)


@HOOKS.register_module()
class SRSummaryHook(SummaryHook):
    """One summary line at the end of training (last validation metrics, best PSNR, iterations, wall time) and of
    testing."""
    best_name = 'best_psnr'
    counters = {'iters': 'iter'}
    count_name = 'images'

    def format(self, metrics: Optional[dict], seconds: float, **extra) -> str:
        return format_sr_summary(metrics, seconds, **extra)

    def best_candidate(self, metrics: dict) -> Optional[float]:
        return metrics.get('psnr')
