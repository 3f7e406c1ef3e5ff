"""Dropout and drop path (stochastic depth): multiply by a scaled keep-mask.

    dropout:   mask ~ Bernoulli(1-p) per element, y = x * mask / (1-p)
    drop path: one mask value per sample (shape (B, 1, 1)), so a whole residual branch is dropped

The cache is the scaled mask itself; the backward is dx = dy * mask.  A caller can pass ``mask``
to replay a fixed mask (gradient checks do).  With p == 0 or no rng the op is the identity and
the cache is None.
"""
from typing import Any, NamedTuple


class DropoutCache(NamedTuple):
    mask: Any  # keep-mask already divided by (1 - p), broadcastable to x


def dropout_mask(shape, p, rng, backend, dtype):
    """A keep-mask scaled by 1/(1-p), or None when nothing is dropped (p == 0 or no rng)."""
    if p == 0.0 or rng is None:
        return None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = rng.random(shape, dtype=backend.xp.float32) >= p
    return keep.astype(dtype) * (1.0 / (1.0 - p))


def dropout_forward(x, p, rng, backend, mask=None, per_sample=False):
    if mask is None:
        shape = (x.shape[0],) + (1,) * (x.ndim - 1) if per_sample else x.shape
        mask = dropout_mask(shape, p, rng, backend, x.dtype)
        if mask is None:
            return x, None
    return x * mask, DropoutCache(mask)


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache.mask


def drop_path_forward(x, p, rng, backend, mask=None):
    """Stochastic depth: drop each sample's residual branch with probability p."""
    return dropout_forward(x, p, rng, backend, mask=mask, per_sample=True)


drop_path_backward = dropout_backward
