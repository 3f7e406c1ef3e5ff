"""Weight initialisation by parameter name, drawn on the host from one seed so every backend agrees.

Linear weights: truncated normal, std ``linear_std`` (0.01 for the ViT, the seed's; 0.02 for Swin,
timm's), biases zero.  Patch projection: Kaiming normal in fan-out mode (std = sqrt(2 / (D * ph *
pw))), bias zero.  LayerNorm: ones and zeros.  Class/distillation tokens, position embeddings and
Swin's relative position tables: truncated normal, std 0.02.
As in PyTorch's ``trunc_normal_`` the bounds are absolute, [-2, 2], so at these stds the
truncation never bites; it is kept so a larger std still behaves like timm's.
"""
import math

import numpy as np


# Values drawn per step: the float64 draws of a big weight go into the model's dtype a slice at a
# time, so building a float32 ViT-B/16 never holds an 18 MiB float64 copy of an fc weight (those
# copies left holes in the heap that outlived the build).  NumPy's Generator gives the same stream
# whether n values are drawn at once or in slices, so the weights do not depend on the slice size.
_DRAW_CHUNK = 1 << 16


def _draws(rng, std, n):
    """(start, float64 values) for n N(0, std^2) draws in C order, a slice at a time."""
    for start in range(0, n, _DRAW_CHUNK):
        yield start, rng.normal(0.0, std, size=min(_DRAW_CHUNK, n - start))


def _normal_into(out, rng, std):
    """Fill ``out`` with N(0, std^2) draws in C order."""
    flat = out.reshape(-1)
    for start, values in _draws(rng, std, flat.size):
        flat[start:start + values.size] = values
    return out


def trunc_normal(rng, shape, std, lo=-2.0, hi=2.0, dtype=np.float64):
    """N(0, std^2) with every draw outside [lo, hi] redrawn (after the whole array, in C order)."""
    flat = np.empty(shape, dtype).reshape(-1)
    bad = []
    for start, values in _draws(rng, std, flat.size):
        flat[start:start + values.size] = values
        if values.size and (values.min() < lo or values.max() > hi):  # compared before rounding
            bad.append(start + np.flatnonzero((values < lo) | (values > hi)))
    bad = np.concatenate(bad) if bad else np.empty(0, np.intp)
    while bad.size:  # redraw only the out-of-range entries
        values = rng.normal(0.0, std, size=bad.size)
        flat[bad] = values
        bad = bad[(values < lo) | (values > hi)]
    return flat.reshape(shape)


_EMBEDDINGS = ("cls_token", "dist_token", "pos_embed", "absolute_pos_embed")


def init_params(shapes, seed, dtype=np.float64, linear_std=0.01):
    """Yield (name, host array of ``dtype``) for the parameter ``shapes`` ({name: shape}), one at a
    time so a caller can move each where it goes before the next is drawn.  The values are the
    float64 draws rounded to ``dtype``, whatever the dtype."""
    rng = np.random.default_rng(seed)
    for name, shape in shapes.items():
        if name in _EMBEDDINGS or name.endswith("relative_position_bias_table"):
            yield name, trunc_normal(rng, shape, 0.02, dtype=dtype)
        elif name == "patch_embed.proj.weight":
            fan_out = shape[0] * shape[2] * shape[3]
            yield name, _normal_into(np.empty(shape, dtype), rng, math.sqrt(2.0 / fan_out))
        elif _is_norm(name):
            yield name, np.ones(shape, dtype) if name.endswith(".weight") else np.zeros(shape, dtype)
        elif name.endswith(".weight"):
            yield name, trunc_normal(rng, shape, linear_std, dtype=dtype)
        else:  # every remaining parameter is a bias
            yield name, np.zeros(shape, dtype)


def _is_norm(name):
    return name.startswith("norm.") or any(f".{n}." in name for n in ("norm", "norm1", "norm2"))
