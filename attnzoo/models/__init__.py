"""attnzoo model families (importing this registers them with timm)."""
