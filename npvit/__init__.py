"""npvit: a Vision Transformer in NumPy (and CuPy) with a hand-written backward pass."""
from .backends import available_backends, get_backend
from .model import VARIANTS, ViTConfig, VisionTransformer, create_model, list_models
from .ops.loss import cross_entropy

__version__ = "0.1.0"

__all__ = [
    "VisionTransformer", "ViTConfig", "create_model", "list_models", "VARIANTS",
    "cross_entropy", "get_backend", "available_backends",
]

# --- checkpoint formats (npvit/formats) ---
from .formats import load, save  # noqa: E402

__all__ += ["load", "save"]
