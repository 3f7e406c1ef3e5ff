"""npvit: a Vision Transformer in NumPy (and CuPy) with a hand-written backward pass.

    model = npvit.create_model("vit_base_patch16_224")     # or npvit.load(path)
    model.predict("cat.jpg")                                 # [(label, probability), ...]
    logits = model.forward(x, train=True, grad=True)
    loss, dlogits = npvit.cross_entropy(logits, labels)
    dx, grads = model.backward(dlogits)

Subpackages: ``npvit.optim`` (optimizers, schedules), ``npvit.train`` (the training loop),
``npvit.preprocess``, ``npvit.formats``; see README.md.
"""
from .backends import available_backends, get_backend
from .model import VARIANTS, SwinConfig, SwinTransformer, ViTConfig, VisionTransformer, create_model, list_models
from .ops.loss import cross_entropy

__version__ = "0.1.0"

__all__ = [
    "VisionTransformer", "ViTConfig", "SwinTransformer", "SwinConfig", "create_model", "list_models", "VARIANTS", "load", "save",
    "cross_entropy", "get_backend", "available_backends",
]


def __getattr__(name):
    """``npvit.load`` / ``npvit.save`` import the checkpoint readers on first use, which keeps
    ``import npvit`` to numpy's own import time."""
    if name in ("load", "save"):
        from . import formats

        return getattr(formats, name)
    raise AttributeError(f"module 'npvit' has no attribute {name!r}")
