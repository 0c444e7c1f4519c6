"""Install attnzoo: ``pip install -e .`` (add ``[dev]`` for the test suite)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"__version__ = '([^']+)'", (HERE / 'attnzoo' / '__init__.py').read_text()).group(1)

setup(
    name='attnzoo',
    version=VERSION,
    description='Local- and sparse-attention vision transformers (NAT/DiNAT, BiFormer, FaViT, L2ViT, '
                'Sparsifiner, DLGSANet) registered in timm, with shared attention ops and tools.',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.10',
    packages=find_packages(include=['attnzoo', 'attnzoo.*']),
    install_requires=[
        'torch>=2.5',
        'torchvision',
        'timm>=1.0.31',
        'mmengine>=0.10',
        'pillow',
        'fvcore',
        'scikit-learn',
        'numpy',
    ],
    extras_require={
        # NATTEN's fused kernels: optional fast path, never required.
        'natten': ['natten>=0.21'],
        # super-resolution demo photos (bundled in the wheel, no download)
        'sr': ['scikit-image'],
        # detection / instance segmentation: COCO json reading and COCO AP (pycocotools' COCOeval)
        'det': ['pycocotools>=2.0.8'],
        'dev': ['pytest>=8', 'natten>=0.21', 'scikit-image', 'pycocotools>=2.0.8'],
    },
)
