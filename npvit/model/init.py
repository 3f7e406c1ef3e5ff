"""The seed's weight initialisation, drawn on the host from one seed so every backend agrees.

Linear weights: truncated normal, std 0.01, biases zero.  Patch projection: Kaiming normal in
fan-out mode (std = sqrt(2 / (D * ph * pw))), bias zero.  LayerNorm: ones and zeros.
Class/distillation tokens and position embedding: truncated normal, std 0.02.
As in PyTorch's ``trunc_normal_`` the bounds are absolute, [-2, 2], so at these stds the
truncation never bites; it is kept so a larger std still behaves like timm's.
"""
import math

import numpy as np


def trunc_normal(rng, shape, std, lo=-2.0, hi=2.0):
    out = rng.normal(0.0, std, size=shape)
    bad = (out < lo) | (out > hi)
    while bad.any():  # redraw only the out-of-range entries
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out


def init_params(shapes, seed):
    """Yield (name, float64 host array) for the parameter ``shapes`` ({name: shape}), one at a
    time so a caller can convert each before the next is drawn (peak memory: one float64 array)."""
    rng = np.random.default_rng(seed)
    for name, shape in shapes.items():
        if name in ("cls_token", "dist_token", "pos_embed"):
            yield name, trunc_normal(rng, shape, 0.02)
        elif name == "patch_embed.proj.weight":
            fan_out = shape[0] * shape[2] * shape[3]
            yield name, rng.normal(0.0, math.sqrt(2.0 / fan_out), size=shape)
        elif _is_norm(name):
            yield name, np.ones(shape) if name.endswith(".weight") else np.zeros(shape)
        elif name.endswith(".weight"):
            yield name, trunc_normal(rng, shape, 0.01)
        else:  # every remaining parameter is a bias
            yield name, np.zeros(shape)


def _is_norm(name):
    return name.startswith("norm.") or ".norm1." in name or ".norm2." in name
