"""attnzoo model families (importing this registers them with timm)."""
from .biformer import BiFormer  # noqa: F401  (registers biformer_{tiny,small,base,stl,stl_nchw})
from .dlgsanet import DLGSANet  # noqa: F401  (registers dlgsanet_{tiny,light,full}_x{2,3,4})
from .favit import FaViT  # noqa: F401  (registers favit_b{0,1,2,3})
from .l2vit import L2ViT  # noqa: F401  (registers l2vit_{tiny,small,base}, l2vit_base_384)
from .nat import NAT, NATIsotropic  # noqa: F401  (registers nat_*, dinat_*, dinat_s_*, *_isotropic_*)
from .sparsifiner import Sparsifiner  # noqa: F401  (registers sparsifiner_deit_{tiny,small,base})
