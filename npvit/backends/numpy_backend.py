"""The NumPy backend, with an ``erf`` written in NumPy (no SciPy at runtime).

Two evaluations of erf, chosen by dtype:

* float64 -- accurate to ~1 ulp, because the float64 path is the one gradient checks and
  PyTorch-autograd parity lean on.  For |x| <= 3 it sums the all-positive series
  erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n x (2x^2)^n / (2n+1)!!   (no cancellation);
  for |x| > 3 it evaluates erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
  as a continued fraction, which converges fast there.
* float32 / float16 -- Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7, computed in float32.
  That is below float32 GELU rounding (PyTorch's own float32 erf differs from float64 by ~1e-6).
"""
import math

import numpy

from .base import Backend

_SERIES_LIMIT = 3.0
_CF_DEPTH = 60
# Abramowitz & Stegun 7.1.26 (Hastings) coefficients.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf_float64(x):
    """erf of a float64 array to about one ulp (see module docstring)."""
    np = numpy
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    result = np.empty_like(x)

    small = ax <= _SERIES_LIMIT
    if small.any():
        xs = ax[small]
        two_x2 = 2.0 * xs * xs
        term = xs.copy()
        total = xs.copy()
        n = 0
        # Terms grow while 2n+1 < 2x^2 (at most n ~ 9 here) and then fall geometrically.
        while True:
            n += 1
            term *= two_x2 / (2 * n + 1)
            total += term
            if n > 10 and not (term > 1e-17 * total).any():
                break
        result[small] = (2.0 / math.sqrt(math.pi)) * np.exp(-xs * xs) * total

    large = ~small
    if large.any():
        xl = ax[large]
        # Evaluate the continued fraction from its tail towards its head.
        f = xl.copy()
        for k in range(_CF_DEPTH, 0, -1):
            f = xl + (0.5 * k) / f
        erfc = np.exp(-xl * xl) / (math.sqrt(math.pi) * f)
        result[large] = 1.0 - erfc
    # NaN stays NaN: it fails both masks' comparisons, so copy it through explicitly.
    nan = np.isnan(x)
    if nan.any():
        result[nan] = np.nan
    return np.copysign(result, x)


def erf_float32(x, out=None):
    """erf in float32 by A&S 7.1.26 (|error| <= 1.5e-7); ``out`` may alias ``x``."""
    np = numpy
    x = np.asarray(x)
    ax = np.abs(x, dtype=np.float32)
    t = 1.0 / (1.0 + np.float32(_AS_P) * ax)
    poly = np.float32(_AS_A[4])
    for a in _AS_A[3::-1]:
        poly = poly * t + np.float32(a)
    poly *= t
    ax *= ax
    np.negative(ax, out=ax)
    np.exp(ax, out=ax)
    ax *= poly
    np.subtract(np.float32(1.0), ax, out=ax)
    return np.copysign(ax, x, out=out if out is not None else ax).astype(x.dtype, copy=False)


# With z = |x| / sqrt 2, t = 1 / (1 + p z) = c u where u = 1 / (c + |x|) and c = sqrt 2 / p, so
# 0.5 * poly(t) = sum_k (0.5 a_k c^k) u^k: the scaling of |x| folds into the coefficients.
_AS_C = math.sqrt(2.0) / _AS_P
_HALF_POLY_U = tuple(0.5 * a * _AS_C ** (k + 1) for k, a in enumerate(_AS_A))  # u^1 .. u^5
# NumPy's float32 exp2 is both faster than its exp (0.28 vs 0.49 ns per element on this project's
# Zen 5 machine) and closer (1 ulp vs 2.4), so exp(y) is taken as exp2(y log2 e), the factor folded
# into a multiplication that is there anyway.
_HALF_LOG2E = -0.5 / math.log(2.0)


def _half_erfc_parts(x, s1, s2, s3):
    """For a float32 block: s1 = |x|, s2 = exp(-x^2 / 2), s3 = q = 0.5 * erfc(|x| / sqrt 2), by the
    A&S 7.1.26 form erfc(z) = poly(t) exp(-z^2), t = 1 / (1 + p z), in place, no allocation."""
    np = numpy
    np.abs(x, out=s1)
    np.add(s1, _AS_C, out=s2)
    np.divide(1.0, s2, out=s2)                                       # u (divide beats reciprocal)
    np.multiply(s2, _HALF_POLY_U[4], out=s3)
    for coef in _HALF_POLY_U[3::-1]:
        s3 += coef
        s3 *= s2                                                     # 0.5 * poly(t), Horner in u
    np.multiply(s1, _HALF_LOG2E, out=s2)
    s2 *= s1
    np.exp2(s2, out=s2)                                              # exp(-x^2 / 2) = 2^(-x^2 log2(e) / 2)
    s3 *= s2                                                         # q


def gelu_exact_float32(x, out, scratch, deriv=None):
    """out = GELU(x) = relu(x) - |x| q: one formula for both signs, no 1 + erf cancellation
    (relu(x) = (x + |x|) / 2 is exact and cheaper than np.maximum).  With ``deriv``, also
    GELU'(x) = Phi(x) + x phi(x) from the same q and exponential, where Phi = 0.5 + sign(x) (0.5 - q):
    six more passes instead of a second evaluation in the backward."""
    np = numpy
    s1, s2, s3 = scratch
    _half_erfc_parts(x, s1, s2, s3)
    if deriv is not None:
        np.subtract(0.5, s3, out=deriv)
        np.copysign(deriv, x, out=deriv)
        deriv += 0.5                                                 # Phi(x)
        s2 *= x
        s2 *= 1.0 / math.sqrt(2.0 * math.pi)                         # x phi(x)
        deriv += s2
    np.add(x, s1, out=out)                                           # out may alias x: x is done
    out *= 0.5                                                       # relu(x)
    s1 *= s3                                                         # |x| q
    out -= s1


# Arrays smaller than this (elements) are worked on by the calling thread: a round trip through the
# pool costs tens of microseconds, more than a tiny model's ops take (measured: a 4-block, 32-wide
# ViT's train step ran 2x slower when every op went through the pool).
_INLINE_BELOW = 1 << 17


class NumpyBackend(Backend):
    """NumPy, plus a thread pool and control of OpenBLAS's threads."""

    name = "numpy"
    xp = numpy

    def __init__(self):
        from .openblas import OpenBlas
        from .parallel import RowPool

        self.pool = RowPool()
        self.blas = OpenBlas()

    def to_numpy(self, x):
        return numpy.asarray(x)

    def prepare_memory(self):
        """Freed activations keep their pages for the next forward (see malloc.py).  Applied at
        the first forward rather than when the backend is made, so building or loading a model
        (float64 draws, file buffers) still returns its temporaries to the system."""
        from .malloc import keep_freed_memory

        return keep_freed_memory()

    def rowwise(self, fn, *arrays, block=None):
        n = arrays[0].shape[0]
        if block is None:  # one call per thread, on an even share of the rows
            def worker(lo, hi):
                return [fn(*(a[lo:hi] for a in arrays))]
            min_rows = 1
        else:
            def worker(lo, hi):
                return [fn(*(a[start:min(start + block, hi)] for a in arrays)) for start in range(lo, hi, block)]
            min_rows = block
        # Results come back in block order and blocks have a fixed size, so anything the caller
        # sums over them (parameter gradients) is bit-identical from run to run and for any
        # number of threads.  OpenBLAS is held at one thread inside: the pool's threads are the
        # parallelism, and OpenBLAS's own workers, once woken, spin for ~0.1 s after each product
        # and would take the cores from the pool (measured: 2.9 s -> 2.3 s per S/16 train step).
        with self.blas.limit(1):
            if arrays[0].size < _INLINE_BELOW:  # handing out the work would cost more than it takes
                per_slice = [worker(0, n)]
            else:
                per_slice = self.pool.run(worker, n, min_rows=min_rows)
        return [r for results in per_slice for r in results]

    def erf(self, x):
        if x.dtype == numpy.float64:
            return erf_float64(x)
        return erf_float32(x)

    # Fused float32 GELU: ~20 in-place passes over a cache-sized block, no temporaries; float64
    # keeps the plain twin (exact erf), which the gradient checks rely on.
    def gelu_exact(self, x, out, deriv=None, scratch=None):
        """``scratch``: three arrays shaped like ``x`` that a caller reuses across blocks."""
        if x.dtype != numpy.float32:
            return super().gelu_exact(x, out, deriv)
        gelu_exact_float32(x, out, scratch or [numpy.empty_like(x) for _ in range(3)], deriv)
