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


def dropout_forward(x, p, rng, xp, mask=None, per_sample=False):
    if mask is None:
        if p == 0.0 or rng is None:
            return x, None
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        shape = (x.shape[0],) + (1,) * (x.ndim - 1) if per_sample else x.shape
        keep = rng.random(shape, dtype=xp.float32) >= p
        mask = keep.astype(x.dtype) * (1.0 / (1.0 - p))
    return x * mask, DropoutCache(mask)


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache.mask


def drop_path_forward(x, p, rng, xp, mask=None):
    """Stochastic depth: drop each sample's residual branch with probability p."""
    return dropout_forward(x, p, rng, xp, mask=mask, per_sample=True)


drop_path_backward = dropout_backward
