"""Shared pytest setup: the ``slow`` marker and the location of the shared parity fixtures.

Slow tests (more than ~20 s on a 2-core CPU) are skipped unless ``--runslow`` is given or ``ATTNZOO_RUN_SLOW=1``.
Tests run single-threaded (``ATTNZOO_TEST_THREADS`` overrides): on a small shared CPU, OpenMP threads competing
with other processes make small ops ~50x slower.
"""
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / 'shared'
PARITY_DIR = SHARED_DIR / 'parity'

torch.set_num_threads(int(os.environ.get('ATTNZOO_TEST_THREADS', '1')))


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~20 s on a 2-core CPU; run with --runslow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow') or os.environ.get('ATTNZOO_RUN_SLOW') == '1':
        return
    skip_slow = pytest.mark.skip(reason='slow test: run with --runslow (or ATTNZOO_RUN_SLOW=1)')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope='session')
def parity_dir() -> Path:
    """``<repo>/../shared/parity``; tests using it skip when it is absent."""
    if not PARITY_DIR.is_dir():
        pytest.skip(f'parity fixtures not found at {PARITY_DIR} (expected <repo>/../shared/parity)')
    return PARITY_DIR


@pytest.fixture(scope='session')
def tiny_imagefolder(tmp_path_factory) -> Path:
    """An ImageNet-style folder for the tool tests: 3 classes (told apart by brightness) x 4 train / 2 val JPEGs of
    32 px, ``root/{train,val}/n0000<c>/img<i>.JPEG``. Shared by the session: tests must not write into it."""
    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp('inet')
    rng = np.random.RandomState(0)
    for split, n in (('train', 4), ('val', 2)):
        for c in range(3):
            d = root / split / f'n0000{c}'
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.rand(32, 32, 3) * 60 + c * 80).astype(np.uint8)).save(d / f'img{i}.JPEG')
    return root


@pytest.fixture
def no_tf32():
    """fp32 matmuls and convolutions in full precision on CUDA, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
