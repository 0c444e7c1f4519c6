"""The demo datasets the configs write on first use (``prepare=`` of the task datasets), and how they are written.

Each writer builds its tree under a temporary name next to ``root`` (:func:`staging_dir`) and renames it when
complete (:func:`publish_dir`), so a half-written tree is never mistaken for a complete one. :data:`PREPARERS`
holds, per task, the ``prepare=`` names the configs use:

* classification ``'sklearn_digits'``: :func:`write_digits_imagefolder` (scikit-learn's 8x8 digits, bundled);
* detection ``'tiny_shapes'``: :func:`write_tiny_coco` (synthetic COCO json + PNGs, polygon masks);
* segmentation ``'tiny_shapes'``: :func:`write_tiny_seg` (synthetic ADE20K layout);
* super-resolution ``'skimage_photos'``: :func:`write_skimage_photos` (photos bundled with scikit-image).
"""
import json
import os
import os.path as osp
import shutil
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
from mmengine.dist import barrier, is_main_process

__all__ = ['PREPARERS', 'prepare_dataset', 'staging_dir', 'publish_dir', 'load_digits', 'write_digits_imagefolder',
           'write_tiny_coco', 'write_tiny_seg', 'write_skimage_photos']


# --------------------------------------------------------------------------------------------------------------
# writing a tree
# --------------------------------------------------------------------------------------------------------------
def staging_dir(root: str) -> str:
    """An empty folder next to ``root`` (``<root>.tmp-<pid>``) to write a dataset into before
    :func:`publish_dir`."""
    tmp = f'{root}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_dir(tmp: str, root: str) -> None:
    """Rename the finished ``tmp`` to ``root`` (atomic), or drop it if another process finished ``root`` first."""
    os.makedirs(osp.dirname(root) or '.', exist_ok=True)
    if osp.exists(root):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, root)


def prepare_dataset(task: str, data_root: str, prepare: Union[str, dict], needed: bool = True) -> None:
    """Write the demo dataset of ``task`` (a key of :data:`PREPARERS`) that ``prepare`` names (``'kind'`` or
    ``dict(type='kind', **kwargs)``) into ``data_root`` when ``needed``: rank 0 writes, every rank waits for it."""
    preparers = PREPARERS[task]
    cfg = dict(type=prepare) if isinstance(prepare, str) else dict(prepare)
    kind = cfg.pop('type')
    if kind not in preparers:
        raise ValueError(f'prepare={kind!r} is unknown; valid: {sorted(preparers)}')
    if needed and is_main_process():
        preparers[kind](data_root, **cfg)
    barrier()


# --------------------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------------------
def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 handwritten digits bundled with attnzoo (scikit-learn's ``load_digits`` arrays, see
    ``attnzoo/tasks/data/README.md``): ``(images uint8 [1797, 8, 8] in 0..16, targets uint8 [1797])``."""
    with np.load(osp.join(osp.dirname(__file__), 'data', 'digits.npz')) as data:
        return data['images'], data['target']


def write_digits_imagefolder(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write the 1,797 handwritten digits (``load_digits``) as ``root/{train,val}/<digit>/<idx>.png``.

    Each 8x8 image (values 0..16) is scaled to 0..255 and resized to ``size`` px (bicubic),
    stored as grayscale PNG. The split is stratified and deterministic: per class, a
    ``seed``-fixed permutation puts ``round(n * val_fraction)`` images into ``val``.
    The folder is written under a temporary name and renamed, so a half-written tree is never
    mistaken for a complete one. Returns ``root``.
    """
    from PIL import Image

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    if size < 8:
        raise ValueError(f'size must be >= 8 px, got {size}')
    digit_images, targets = load_digits()
    images = (digit_images / 16.0 * 255.0).round().clip(0, 255).astype(np.uint8)
    rng = np.random.RandomState(seed)
    split_of = np.empty(len(targets), dtype=object)
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        split_of[idx[:n_val]] = 'val'
        split_of[idx[n_val:]] = 'train'

    root = osp.abspath(root)
    tmp = staging_dir(root)
    for split in ('train', 'val'):
        for c in range(10):
            os.makedirs(osp.join(tmp, split, str(c)), exist_ok=True)
    for i, (img, c, split) in enumerate(zip(images, targets, split_of)):
        pil = Image.fromarray(img, mode='L').resize((size, size), Image.BICUBIC)
        pil.save(osp.join(tmp, split, str(int(c)), f'{i:04d}.png'))
    publish_dir(tmp, root)
    return root


# --------------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------------
def _shape_polygon(kind: str, cx: float, cy: float, r: float, rng) -> List[float]:
    if kind == 'square':
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif kind == 'triangle':
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:  # circle
        a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = list(zip(cx + r * np.cos(a), cy + r * np.sin(a)))
    return [float(v) for p in pts for v in p]


def write_tiny_coco(root: str, num_train: int = 24, num_val: int = 8, size: Tuple[int, int] = (160, 128),
                    max_objects: int = 3, seed: int = 0, val_equals_train: bool = False) -> str:
    """Write a synthetic COCO set: ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json``.

    Each ``size`` = (W, H) image has 1..``max_objects`` filled shapes (categories ``square`` / ``circle`` /
    ``triangle``, ids 1 / 2 / 3) in random colours on a random grey background, drawn with PIL from the polygon
    that is also stored as the mask (``segmentation``), with its bounding box and area. ``val_equals_train`` makes
    the val split a copy of train (for overfitting checks). Written under a temporary name, then renamed.
    """
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    rng = np.random.RandomState(seed)
    kinds = ('square', 'circle', 'triangle')
    cats = [dict(id=i + 1, name=k, supercategory='shape') for i, k in enumerate(kinds)]
    root = osp.abspath(root)
    tmp = staging_dir(root)
    os.makedirs(osp.join(tmp, 'annotations'))
    W, H = size
    splits = {}
    for split, n in (('train', num_train), ('val', num_val)):
        if split == 'val' and val_equals_train:
            splits['val'] = splits['train']
            shutil.copytree(osp.join(tmp, 'train'), osp.join(tmp, 'val'))
            continue
        os.makedirs(osp.join(tmp, split))
        images, anns = [], []
        for i in range(n):
            bg = int(rng.randint(60, 120))
            img = Image.new('RGB', (W, H), (bg, bg, bg))
            draw = ImageDraw.Draw(img)
            for _ in range(rng.randint(1, max_objects + 1)):
                k = int(rng.randint(len(kinds)))
                r = float(rng.uniform(0.1, 0.22) * min(W, H))
                cx, cy = float(rng.uniform(r + 1, W - r - 1)), float(rng.uniform(r + 1, H - r - 1))
                poly = _shape_polygon(kinds[k], cx, cy, r, rng)
                colour = tuple(int(c) for c in rng.randint(140, 256, size=3))
                draw.polygon(poly, fill=colour)
                rle = mask_utils.frPyObjects([poly], H, W)
                area = float(mask_utils.area(mask_utils.merge(rle)))
                xs, ys = poly[0::2], poly[1::2]
                bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=k + 1, segmentation=[poly],
                                 area=area, bbox=bbox, iscrowd=0))
            name = f'{i:04d}.png'
            img.save(osp.join(tmp, split, name))
            images.append(dict(id=i + 1, file_name=name, width=W, height=H))
        splits[split] = dict(images=images, annotations=anns, categories=cats)
    for split, data in splits.items():
        with open(osp.join(tmp, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(data, f)
    publish_dir(tmp, root)
    return root


# --------------------------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------------------------
def write_tiny_seg(root: str, num_train: int = 16, num_val: int = 4, size: Tuple[int, int] = (96, 80),
                   seed: int = 0, val_equals_train: bool = False) -> str:
    """Write a synthetic ADE20K-layout set: ``root/images/{training,validation}/*.jpg`` and
    ``root/annotations/{training,validation}/*.png``. Labels: 0 = "other" (the background, ignored with
    ``reduce_zero_label``), 1..3 = square / circle / triangle, each in its class's colour family (reddish /
    greenish / bluish, +-60 per channel at random, so colours of different classes overlap), plus pixel noise."""
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(seed)
    root = osp.abspath(root)
    tmp = staging_dir(root)
    W, H = size
    for split, n in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(tmp, 'images', split))
        os.makedirs(osp.join(tmp, 'annotations', split))
        if split == 'validation' and val_equals_train:
            for sub in ('images', 'annotations'):
                for f in sorted(os.listdir(osp.join(tmp, sub, 'training')))[:n]:
                    shutil.copy(osp.join(tmp, sub, 'training', f), osp.join(tmp, sub, split, f))
            continue
        for i in range(n):
            img = Image.new('RGB', (W, H), (110, 110, 110))
            lab = Image.new('L', (W, H), 0)
            di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
            for _ in range(rng.randint(1, 4)):
                c = int(rng.randint(1, 4))
                base = np.array({1: (200, 90, 90), 2: (90, 200, 90), 3: (90, 90, 200)}[c])
                colour = tuple(int(v) for v in np.clip(base + rng.randint(-60, 61, size=3), 0, 255))
                r = float(rng.uniform(0.15, 0.3) * min(W, H))
                cx, cy = rng.uniform(r, W - r), rng.uniform(r, H - r)
                if c == 1:
                    box = [cx - r, cy - r, cx + r, cy + r]
                    di.rectangle(box, fill=colour)
                    dl.rectangle(box, fill=c)
                elif c == 2:
                    box = [cx - r, cy - r, cx + r, cy + r]
                    di.ellipse(box, fill=colour)
                    dl.ellipse(box, fill=c)
                else:
                    poly = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
                    di.polygon(poly, fill=colour)
                    dl.polygon(poly, fill=c)
            arr = np.asarray(img).astype(np.int16) + rng.randint(-20, 21, size=(H, W, 3))
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(osp.join(tmp, 'images', split, f'{i:04d}.jpg'),
                                                                    quality=95)
            lab.save(osp.join(tmp, 'annotations', split, f'{i:04d}.png'))
    publish_dir(tmp, root)
    return root


# --------------------------------------------------------------------------------------------------------------
# super-resolution
# --------------------------------------------------------------------------------------------------------------
def _skimage_photo(data, name: str) -> np.ndarray:
    if name in ('motorcycle_left', 'motorcycle_right'):
        return data.stereo_motorcycle()[0 if name.endswith('left') else 1]
    return getattr(data, name)()


def write_skimage_photos(root: str, train: Sequence[str] = ('chelsea', 'coffee', 'motorcycle_left',
                                                            'motorcycle_right', 'immunohistochemistry'),
                         val: Sequence[str] = ('astronaut',)) -> str:
    """Write photos bundled in the scikit-image wheel (no download) as ``root/{train,val}/<name>.png``.
    Default: astronaut held out for validation."""
    from PIL import Image
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover
        raise ImportError('the demo needs scikit-image: pip install "attnzoo[sr]"') from e
    root = osp.abspath(root)
    tmp = staging_dir(root)
    for split, names in (('train', train), ('val', val)):
        os.makedirs(osp.join(tmp, split), exist_ok=True)
        for name in names:
            img = _skimage_photo(skimage.data, name)
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            rgb = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
            Image.fromarray(rgb).save(osp.join(tmp, split, f'{name}.png'))
    publish_dir(tmp, root)
    return root


PREPARERS: Dict[str, Dict[str, Callable[..., str]]] = {
    'classification': {'sklearn_digits': write_digits_imagefolder},
    'detection': {'tiny_shapes': write_tiny_coco},
    'segmentation': {'tiny_shapes': write_tiny_seg},
    'super_resolution': {'skimage_photos': write_skimage_photos},
}
