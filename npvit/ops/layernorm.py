"""LayerNorm over the last axis: y = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + eps).

Shapes: x (..., D) -> y (..., D).  Cache: x, mean, rstd and the weight; xhat is recomputed in the
backward rather than stored, which keeps one activation-sized array per norm instead of two.
"""
from typing import Any, NamedTuple


class LayerNormCache(NamedTuple):
    x: Any       # (..., D)
    mean: Any    # (..., 1)
    rstd: Any    # (..., 1)
    weight: Any  # (D,)


def layernorm_forward(x, weight, bias, eps, xp):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xc *= rstd                                                     # xc is now xhat
    y = xc * weight + bias
    return y, LayerNormCache(x, mean, rstd, weight)


def layernorm_backward(dy, cache):
    """Returns (dx, dweight, dbias)."""
    x, mean, rstd, weight = cache
    xhat = (x - mean) * rstd
    lead = tuple(range(dy.ndim - 1))
    dweight = (dy * xhat).sum(axis=lead)
    dbias = dy.sum(axis=lead)
    dxhat = dy * weight
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dx = dxhat - dxhat.mean(axis=-1, keepdims=True)
    dx -= xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx *= rstd
    return dx, dweight, dbias
