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
    backend: Any


# Rows per block when the backend splits the work (see Backend.rowwise).
_BLOCK_ROWS = 64


def layernorm_forward(x, weight, bias, eps, backend):
    xp, D = backend.xp, x.shape[-1]
    rows = x.reshape(-1, D)
    y, mean, rstd = xp.empty_like(rows), xp.empty((rows.shape[0], 1), x.dtype), xp.empty((rows.shape[0], 1), x.dtype)

    def block(x_, y_, mean_, rstd_):
        mean_[...] = x_.mean(axis=-1, keepdims=True)
        xc = x_ - mean_
        var = (xc * xc).mean(axis=-1, keepdims=True)
        rstd_[...] = 1.0 / xp.sqrt(var + eps)
        xc *= rstd_                                                # xc is now xhat
        y_[...] = xc * weight + bias

    backend.rowwise(block, rows, y, mean, rstd, block=_BLOCK_ROWS)
    lead = x.shape[:-1]
    return y.reshape(x.shape), LayerNormCache(x, mean.reshape(*lead, 1), rstd.reshape(*lead, 1), weight, backend)


def layernorm_backward(dy, cache):
    """Returns (dx, dweight, dbias)."""
    x, mean, rstd, weight, backend = cache
    D = x.shape[-1]
    dx = backend.xp.empty((x.size // D, D), dtype=dy.dtype)

    def block(x_, dy_, mean_, rstd_, dx_):
        xhat = (x_ - mean_) * rstd_
        dweight = (dy_ * xhat).sum(axis=0)
        dbias = dy_.sum(axis=0)
        dxhat = dy_ * weight
        # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        d = dxhat - dxhat.mean(axis=-1, keepdims=True)
        d -= xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
        d *= rstd_
        dx_[...] = d
        return dweight, dbias

    parts = backend.rowwise(block, x.reshape(-1, D), dy.reshape(-1, D), mean.reshape(-1, 1),
                            rstd.reshape(-1, 1), dx, block=_BLOCK_ROWS)
    dweight, dbias = parts[0]
    for dw, db in parts[1:]:  # per-block partial sums of the parameter gradients
        dweight = dweight + dw
        dbias = dbias + db
    return dx.reshape(x.shape), dweight, dbias
