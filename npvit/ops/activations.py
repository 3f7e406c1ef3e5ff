"""Pointwise activations: GELU (exact erf form and tanh approximation) and tanh.

GELU exact:  y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),   dy/dx = Phi(x) + x * phi(x)
GELU tanh:   y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
tanh:        y = tanh(x), dy/dx = 1 - y^2      (the representation layer ``pre_logits``)

GELU's forward computes its derivative along with y (the two share erf's expensive exponential) and
caches that instead of x, so its backward is one multiplication.  tanh caches its output (1 - y^2
needs only y).
"""
import math
from typing import Any, NamedTuple

GELU_KINDS = ("exact", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


class GeluCache(NamedTuple):
    deriv: Any   # GELU'(x), shaped like x
    backend: Any


def gelu_forward(x, kind, backend, keep_grad=True):
    """y = GELU(x); with ``keep_grad=False`` the derivative is not computed and the cache is None."""
    if kind not in GELU_KINDS:
        raise ValueError(f"unknown GELU kind {kind!r}: expected one of {GELU_KINDS}")
    xp = backend.xp
    y = xp.empty_like(x)
    deriv = xp.empty_like(x) if keep_grad else None
    rows = [a.reshape(-1, a.shape[-1]) if x.ndim > 1 else a for a in (x, y, deriv) if a is not None]
    backend.rowwise(lambda x_, y_, *d_: gelu_rows(x_, kind, backend, y_, *d_), *rows, blocked=True)
    return y, (GeluCache(deriv, backend) if keep_grad else None)


def gelu_backward(dy, cache):
    deriv, backend = cache
    dx = backend.xp.empty_like(deriv)
    flat = (lambda a: a.reshape(-1, a.shape[-1])) if dx.ndim > 1 else (lambda a: a)
    backend.rowwise(lambda dy_, d_, dx_: backend.xp.multiply(dy_, d_, out=dx_), flat(dy), flat(deriv), flat(dx))
    return dx


def gelu_rows(x, kind, backend, out, deriv=None, scratch=None):
    """out = GELU(x) (and deriv = GELU'(x) if given) for a block of rows; ``out`` may be ``x``.
    ``scratch``: three arrays shaped like ``x`` that a caller reuses across blocks (else allocated)."""
    if kind == "exact":
        backend.gelu_exact(x, out, deriv, scratch=scratch)  # a fused kernel where the backend has one
        return
    xp = backend.xp
    # tanh form in place: t = tanh(u), u = sqrt(2/pi) x (1 + c x^2)
    x2, t = scratch[:2] if scratch is not None else (xp.empty_like(x), xp.empty_like(x))
    xp.multiply(x, x, out=x2)
    xp.multiply(x2, _TANH_C, out=t)
    t += 1.0
    t *= x
    t *= _SQRT_2_OVER_PI
    xp.tanh(t, out=t)
    if deriv is not None:  # 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, du/dx = sqrt(2/pi) (1 + 3 c x^2)
        x2 *= 3.0 * _TANH_C * _SQRT_2_OVER_PI
        x2 += _SQRT_2_OVER_PI
        x2 *= x
        xp.multiply(t, t, out=deriv)
        xp.subtract(1.0, deriv, out=deriv)
        deriv *= x2
        deriv += t
        deriv += 1.0
        deriv *= 0.5
    t += 1.0
    xp.multiply(t, x, out=out)
    out *= 0.5


class TanhCache(NamedTuple):
    y: Any


def tanh_forward(x, backend):
    y = backend.xp.tanh(x)
    return y, TanhCache(y)


def tanh_backward(dy, cache):
    y = cache.y
    return dy * (1.0 - y * y)
