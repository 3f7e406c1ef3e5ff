"""Swin's patch merging: each 2x2 neighbourhood of tokens becomes one token of twice the width.

    x (B, H, W, C) -> zero-pad to even H, W -> x0 = x[0::2, 0::2], x1 = x[1::2, 0::2],
    x2 = x[0::2, 1::2], x3 = x[1::2, 1::2] -> concat (B, H/2, W/2, 4C)       (the original order:
    the row offset varies fastest) -> LayerNorm(4C) -> Linear(4C -> 2C, no bias)

The gather is one reshape + transpose; its backward the inverse transpose, cropping the padding.
Cache: the LayerNorm and linear caches plus the input grid.  In a fused eval pass the norm and the
reduction are one ``Backend.layernorm_linear``.
"""
from typing import Any, NamedTuple

from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward


def merge_gather(x, backend):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C), padding odd sides with zeros."""
    B, H, W, C = x.shape
    if H % 2 or W % 2:
        padded = backend.xp.zeros((B, H + H % 2, W + W % 2, C), dtype=x.dtype)
        padded[:, :H, :W] = x
        x, H, W = padded, H + H % 2, W + W % 2
    x = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 4, 2, 5)    # (B, H/2, W/2, w-off, h-off, C)
    return x.reshape(B, H // 2, W // 2, 4 * C)


def merge_scatter(dy, grid):
    """The gather's backward: (B, H/2, W/2, 4C) -> (B, H, W, C) for the unpadded ``grid``."""
    B, H2, W2, C4 = dy.shape
    C = C4 // 4
    dx = dy.reshape(B, H2, W2, 2, 2, C).transpose(0, 1, 4, 2, 3, 5)          # (B, H/2, h-off, W/2, w-off, C)
    dx = dx.reshape(B, 2 * H2, 2 * W2, C)
    return dx[:, :grid[0], :grid[1]]


class PatchMergeCache(NamedTuple):
    norm: Any        # LayerNormCache
    reduction: Any   # LinearCache
    grid: tuple      # (H, W) of the input


def patch_merge_forward(x, norm_weight, norm_bias, eps, weight, run):
    """x (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C); ``run`` a ``sublayer.Pass``."""
    be = run.backend
    merged = merge_gather(x, be)
    if run.fused:
        return be.layernorm_linear(merged, norm_weight, norm_bias, eps, weight), None
    y, norm = layernorm_forward(merged, norm_weight, norm_bias, eps, be, keep_grad=run.grad)
    y, reduction = linear_forward(y, weight, None, be)
    return y, (PatchMergeCache(norm, reduction, x.shape[1:3]) if run.grad else None)


def patch_merge_backward(dy, cache):
    """Returns (dx, dnorm_weight, dnorm_bias, dweight)."""
    dy, dweight, _ = linear_backward(dy, cache.reduction)
    dy, dnorm_weight, dnorm_bias = layernorm_backward(dy, cache.norm)
    return merge_scatter(dy, cache.grid), dnorm_weight, dnorm_bias, dweight
