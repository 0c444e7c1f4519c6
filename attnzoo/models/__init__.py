"""attnzoo model families (importing this registers them with timm)."""
from .nat import NAT, NATIsotropic  # noqa: F401  (registers nat_*, dinat_*, dinat_s_*, *_isotropic_*)
from .biformer import BiFormer  # noqa: F401  (registers biformer_{tiny,small,base,stl,stl_nchw})
