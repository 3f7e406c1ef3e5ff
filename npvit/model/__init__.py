"""The models: configs, named variants, weight init, and the architectures built from shared parts.

    base.py       Model: parameters, loading/saving, checks, forward/backward plumbing
    schema.py     each architecture's parameter names and shapes
    block.py      the pre-norm transformer block (ViT and Swin)
    attention.py  the attention a block plugs in: global (ViT), shifted windows (Swin)
    vit.py        VisionTransformer             swin.py   SwinTransformer
"""
from .config import SwinConfig, ViTConfig
from .swin import SwinTransformer
from .variants import VARIANTS, create_model, list_models
from .vit import VisionTransformer

__all__ = ["ViTConfig", "SwinConfig", "VisionTransformer", "SwinTransformer", "VARIANTS", "create_model",
           "list_models"]
