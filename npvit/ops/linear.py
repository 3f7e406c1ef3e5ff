"""Linear layer: y = x @ weight.T + bias, PyTorch's layout (weight is (out, in)).

Shapes: x (..., in) -> y (..., out).  Cache: the input (for dweight) and the weight (for dx).
All leading axes are flattened so each product is one large 2-D GEMM, which ``backend.rowwise``
shares out by rows: of x and dy for y and dx, of dy.T (one slice of output features per thread)
for dweight and dbias, so no thread's result is a partial sum another must add to.
"""
from typing import Any, NamedTuple


class LinearCache(NamedTuple):
    x: Any       # (..., in)
    weight: Any  # (out, in)
    backend: Any


def linear_forward(x, weight, bias, backend):
    xp = backend.xp
    x2 = x.reshape(-1, x.shape[-1])                                # (M, in)
    y = xp.empty((x2.shape[0], weight.shape[0]), dtype=xp.result_type(x, weight))

    def block(x_, y_):
        xp.matmul(x_, weight.T, out=y_)
        if bias is not None:
            y_ += bias

    backend.rowwise(block, x2, y)
    return y.reshape(*x.shape[:-1], weight.shape[0]), LinearCache(x, weight, backend)


def linear_backward(dy, cache, input_grad=True):
    """Returns (dx, dweight, dbias); dx is None (and not computed) with ``input_grad=False``."""
    x, weight, backend = cache
    xp = backend.xp
    dy2 = dy.reshape(-1, dy.shape[-1])                             # (M, out)
    x2 = x.reshape(-1, x.shape[-1])                                # (M, in)
    dweight = xp.empty(weight.shape, dtype=xp.result_type(dy, x))
    dbias = xp.empty(weight.shape[0], dtype=dy.dtype)

    def param_grads(dyt_, dw_, db_):                               # dyt_: (out slice, M)
        xp.matmul(dyt_, x2, out=dw_)
        dyt_.sum(axis=1, out=db_)

    backend.rowwise(param_grads, dy2.T, dweight, dbias)
    if not input_grad:
        return None, dweight, dbias
    dx = xp.empty((dy2.shape[0], weight.shape[1]), dtype=xp.result_type(dy, weight))
    backend.rowwise(lambda dy_, dx_: xp.matmul(dy_, weight, out=dx_), dy2, dx)
    return dx.reshape(x.shape), dweight, dbias
