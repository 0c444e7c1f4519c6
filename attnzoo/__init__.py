"""attnzoo: local- and sparse-attention vision transformers for timm.

``import attnzoo`` registers every model with timm, so ``timm.create_model('dinat_tiny')`` works.
"""
__version__ = '0.1.0'

from . import ops  # noqa: F401  (attention ops, backends behind a dispatcher)
from . import models  # noqa: F401  (registers the models with timm)
