"""Pointwise activations: GELU (exact erf form and tanh approximation) and tanh.

GELU exact:  y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),   dy/dx = Phi(x) + x * phi(x)
GELU tanh:   y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
tanh:        y = tanh(x), dy/dx = 1 - y^2      (the representation layer ``pre_logits``)

GELU caches its input (the derivative needs x); tanh caches its output (1 - y^2 needs only y).
"""
import math
from typing import Any, NamedTuple

GELU_KINDS = ("exact", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


class GeluCache(NamedTuple):
    x: Any
    kind: str
    backend: Any


# Rows per block when the backend splits the work: 32 x 3072 float32 temporaries stay in L2.
_BLOCK_ROWS = 32


def gelu_forward(x, kind, backend):
    if kind not in GELU_KINDS:
        raise ValueError(f"unknown GELU kind {kind!r}: expected one of {GELU_KINDS}")
    y = backend.xp.empty_like(x)
    rows = (x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])) if x.ndim > 1 else (x, y)
    backend.rowwise(lambda xs, ys: _gelu(xs, kind, backend, ys), *rows, block=_BLOCK_ROWS)
    return y, GeluCache(x, kind, backend)


def gelu_backward(dy, cache):
    x, kind, backend = cache
    dx = backend.xp.empty_like(x)
    flat = (lambda a: a.reshape(-1, a.shape[-1])) if x.ndim > 1 else (lambda a: a)
    backend.rowwise(lambda xs, dys, dxs: _gelu_grad(xs, dys, kind, backend, dxs),
                    flat(x), flat(dy), flat(dx), block=_BLOCK_ROWS)
    return dx


def _gelu(x, kind, backend, out):
    """out = GELU(x) for a block of rows."""
    if kind == "exact":
        backend.gelu_exact(x, out)  # a fused kernel where the backend has one
        return
    out[...] = backend.xp.tanh(_SQRT_2_OVER_PI * (x + _TANH_C * (x * x * x)))  # x*x*x: np.power is slow
    out += 1.0
    out *= x
    out *= 0.5


def _gelu_grad(x, dy, kind, backend, out):
    """out = dy * GELU'(x) for a block of rows."""
    if kind == "exact":
        backend.gelu_exact_grad(x, dy, out)  # Phi(x) + x phi(x), fused where the backend can
        return
    x2 = x * x
    t = backend.xp.tanh(_SQRT_2_OVER_PI * (x + _TANH_C * x2 * x))
    out[...] = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_C * x2)
    out *= dy


class TanhCache(NamedTuple):
    y: Any


def tanh_forward(x, backend):
    y = backend.xp.tanh(x)
    return y, TanhCache(y)


def tanh_backward(dy, cache):
    y = cache.y
    return dy * (1.0 - y * y)
