"""LayerNorm over the last axis: y = xhat * weight + bias, xhat = (x - mean) * rstd,
rstd = 1/sqrt(var + eps).

Shapes: x (..., D) -> y (..., D).  Cache: xhat, rstd and the weight.  Keeping xhat instead of x
costs the same memory (x itself is then free) and spares the backward recomputing it.  With
``keep_grad=False`` (an eval forward) nothing is kept and xhat is never stored.

Row sums go through matrix-vector products (BLAS reads a row block at memory speed, where NumPy's
``sum(axis=-1)`` costs about three elementwise passes), and the backward needs only one (rows, D)
product, t = dy * xhat, for both dweight and the mean(dxhat * xhat) term.
"""
from typing import Any, NamedTuple


class LayerNormCache(NamedTuple):
    # xhat, never x: a pre-norm block's LayerNorm reads the residual stream, and the residual add
    # (ops/residual.py) then writes the block's output into that same array in place.  Keeping x
    # here would keep an array that is overwritten before the backward reads it.
    xhat: Any    # (M, D) normalised input
    rstd: Any    # (M, 1)
    weight: Any  # (D,)
    shape: tuple  # x.shape
    backend: Any


def normalize_rows(x, eps, xhat, xp):
    """xhat = (x - mean) * rstd for a (rows, D) block; returns rstd (rows, 1)."""
    D = x.shape[1]
    mean = x @ xp.full(D, 1.0 / D, dtype=x.dtype)
    xp.subtract(x, mean[:, None], out=xhat)
    var = xp.einsum("ij,ij->i", xhat, xhat)                    # two passes: no cancellation
    rstd = 1.0 / xp.sqrt(var * (1.0 / D) + eps)
    xhat *= rstd[:, None]
    return rstd[:, None]


def layernorm_rows(x, weight, bias, eps, out, xp):
    """out = LayerNorm(x) for a (rows, D) block; returns rstd (rows, 1)."""
    rstd = normalize_rows(x, eps, out, xp)
    out *= weight
    out += bias
    return rstd


def layernorm_forward(x, weight, bias, eps, backend, keep_grad=True):
    xp, D = backend.xp, x.shape[-1]
    rows = x.reshape(-1, D)
    y = xp.empty_like(rows)
    if not keep_grad:
        backend.rowwise(lambda x_, y_: layernorm_rows(x_, weight, bias, eps, y_, xp), rows, y, blocked=True)
        return y.reshape(x.shape), None
    xhat = xp.empty_like(rows)
    rstd = xp.empty((rows.shape[0], 1), x.dtype)

    def block(x_, y_, xhat_, rstd_):
        rstd_[...] = normalize_rows(x_, eps, xhat_, xp)
        xp.multiply(xhat_, weight, out=y_)
        y_ += bias

    backend.rowwise(block, rows, y, xhat, rstd, blocked=True)
    return y.reshape(x.shape), LayerNormCache(xhat, rstd, weight, x.shape, backend)


def layernorm_backward(dy, cache):
    """Returns (dx, dweight, dbias).

    With dxhat = dy * weight:  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
    where mean(dxhat) = dy @ weight / D and mean(dxhat * xhat) = (dy * xhat) @ weight / D."""
    xhat, rstd, weight, shape, backend = cache
    xp, D = backend.xp, xhat.shape[1]
    dy = dy.reshape(-1, D)
    dx = xp.empty_like(dy)

    def block(xhat_, dy_, rstd_, dx_):
        t = dy_ * xhat_
        ones = xp.ones(t.shape[0], dtype=t.dtype)
        dweight, dbias = ones @ t, ones @ dy_                      # column sums
        mean_dxhat = (dy_ @ weight) * (1.0 / D)
        mean_dxhat_xhat = (t @ weight) * (1.0 / D)
        xp.multiply(dy_, weight, out=dx_)
        dx_ -= mean_dxhat[:, None]
        xp.multiply(xhat_, mean_dxhat_xhat[:, None], out=t)
        dx_ -= t
        dx_ *= rstd_
        return dweight, dbias

    parts = backend.rowwise(block, xhat, dy, rstd, dx, blocked=True)
    dweight, dbias = parts[0]
    for dw, db in parts[1:]:  # per-block partial sums of the parameter gradients
        dweight = dweight + dw
        dbias = dbias + db
    return dx.reshape(shape), dweight, dbias
