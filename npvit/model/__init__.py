"""The Vision Transformer: its config, the named variants, weight init and the model class."""
from .config import ViTConfig
from .variants import VARIANTS, create_model, list_models
from .vit import VisionTransformer

__all__ = ["ViTConfig", "VisionTransformer", "VARIANTS", "create_model", "list_models"]
