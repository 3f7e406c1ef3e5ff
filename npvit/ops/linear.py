"""Linear layer: y = x @ weight.T + bias, PyTorch's layout (weight is (out, in)).

Shapes: x (..., in) -> y (..., out).  Cache: the input (for dweight) and the weight (for dx).
All leading axes are flattened so each product is one large 2-D GEMM.
"""
from typing import Any, NamedTuple


class LinearCache(NamedTuple):
    x: Any       # (..., in)
    weight: Any  # (out, in)


def linear_forward(x, weight, bias):
    y = x.reshape(-1, x.shape[-1]) @ weight.T                      # (M, out)
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0]), LinearCache(x, weight)


def linear_backward(dy, cache):
    """Returns (dx, dweight, dbias)."""
    x, weight = cache
    dy2 = dy.reshape(-1, dy.shape[-1])                             # (M, out)
    x2 = x.reshape(-1, x.shape[-1])                                # (M, in)
    dx = (dy2 @ weight).reshape(x.shape)
    dweight = dy2.T @ x2                                           # (out, in)
    dbias = dy2.sum(axis=0)
    return dx, dweight, dbias
