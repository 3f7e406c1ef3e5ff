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
import contextlib
import math
import threading

import numpy

from ..ops.attention import LOG2E, attend, score_bias
from ..ops.layernorm import layernorm_rows
from .base import Backend, _bias_act
from .blocking import COLUMN_SPLIT_ROWS, GROUP_ROWS, INLINE_BELOW, MACS_PER_ELEMENT, rows_per_block

# Column shares start on a multiple of 16 floats (64 bytes): whole cache lines and SIMD vectors.
_COLUMN_ALIGN = 16
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
# Which of NumPy's float32 exponentials is fast depends on the CPU: with AVX-512 both exp and exp2
# are vectorised and exp2 is the faster and closer one (0.28 vs 0.49 ns per element, 1 ulp vs 2.4,
# Zen 5); with AVX2 alone only exp is (exp 1.45 ns, exp2 2.75 ns, Zen 3).  So exp(y) is taken as
# exp2(y log2 e) where exp2 is fast, as itself elsewhere, and 2^y likewise as exp(y ln 2): in
# either case the constant folds into a multiplication that is there anyway.
EXP2_IS_FAST = bool((numpy._core if hasattr(numpy, "_core") else numpy.core)  # NumPy 2 / NumPy 1
                    ._multiarray_umath.__cpu_features__.get("AVX512F", False))
_LN2 = math.log(2.0)
_HALF_EXPONENT = -0.5 / math.log(2.0) if EXP2_IS_FAST else -0.5   # exp(-x^2 / 2) in the faster base
_exp_in_that_base = numpy.exp2 if EXP2_IS_FAST else numpy.exp


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
    np.multiply(s1, _HALF_EXPONENT, out=s2)
    s2 *= s1
    _exp_in_that_base(s2, out=s2)                                    # exp(-x^2 / 2)
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


def _product_work(rows, cols, depth):
    """The work of a (rows, cols) result of products of ``depth`` terms, plus a few elementwise
    passes over it, in ``parallel_for``'s units (see blocking.py)."""
    return rows * cols * (1 + depth // MACS_PER_ELEMENT)


class NumpyBackend(Backend):
    """NumPy, plus a thread pool, control of OpenBLAS's threads, and fused eval kernels.

    Threads: NumPy's ufuncs run on one core but release the GIL, so npvit splits work between
    the threads of its row pool (``parallel.py``), with OpenBLAS held at one thread (its own
    workers would spin on the pool's cores).  Work is split two ways:

    * by rows, inside each op or kernel (``rowwise``, and the kernels below): every step of a
      training step, and an eval forward of the images left over below;
    * by whole images (``map_batch``): each thread runs an entire eval forward on its own share
      of the batch, ~``GROUP_ROWS`` token rows at a time, never waiting for the others, with
      every product large enough to run near its peak rate.  Inside such a share the ops and
      kernels run on the calling thread (``_local.serial``).
    Block sizes come from ``blocking.py``.
    """

    name = "numpy"
    xp = numpy

    def __init__(self):
        from .openblas import OpenBlas
        from .parallel import RowPool

        self.pool = RowPool()
        self.blas = OpenBlas()
        self._local = threading.local()

    def to_numpy(self, x):
        return numpy.asarray(x)

    def prepare_memory(self):
        """Freed activations keep their pages for the next forward (see malloc.py).  Applied at
        the first forward rather than when the backend is made, so building or loading a model
        (float64 draws, file buffers) still returns its temporaries to the system."""
        from .malloc import keep_freed_memory

        return keep_freed_memory()

    def erf(self, x):
        if x.dtype == numpy.float64:
            return erf_float64(x)
        return erf_float32(x)

    def exp2(self, x, out=None):
        if EXP2_IS_FAST or x.dtype != numpy.float32:
            return numpy.exp2(x, out=out)
        y = numpy.multiply(x, _LN2, out=out)
        return numpy.exp(y, out=y)

    # Fused float32 GELU: ~20 in-place passes over a cache-sized block, no temporaries; float64
    # keeps the plain twin (exact erf), which the gradient checks rely on.
    def gelu_exact(self, x, out, deriv=None, scratch=None):
        if x.dtype != numpy.float32:
            return super().gelu_exact(x, out, deriv)
        gelu_exact_float32(x, out, scratch or [numpy.empty_like(x) for _ in range(3)], deriv)

    # --- execution ---------------------------------------------------------------------
    def _serial(self):
        """True inside a thread that owns whole images (``map_batch``): run everything here."""
        return getattr(self._local, "serial", False)

    def parallel_for(self, fn, n, min_rows=1, work=None):
        """Call ``fn(lo, hi)`` over slices of ``range(n)`` on the pool (boundaries multiples of
        ``min_rows``), or once on this thread when ``work`` (elements touched) is too small to be
        worth handing out, or inside a ``map_batch`` share.  Returns the results in order."""
        if self._serial() or (work is not None and work < INLINE_BELOW):
            return [fn(0, n)]
        with self.blas.limit(1):
            return self.pool.run(fn, n, min_rows=min_rows)

    def rowwise(self, fn, *arrays, blocked=False, row_size=None):
        n = arrays[0].shape[0]
        if not blocked:  # one call per thread, on an even share of the rows
            def worker(lo, hi):
                return [fn(*(a[lo:hi] for a in arrays))]
            block = 1
        else:
            if row_size is None:
                row_size = max(a.size // max(1, a.shape[0]) for a in arrays)
            block = rows_per_block(row_size)

            def worker(lo, hi):
                return [fn(*(a[s:min(s + block, hi)] for a in arrays)) for s in range(lo, hi, block)]
        # Results come back in block order and blocks have a fixed size, so anything the caller
        # sums over them (parameter gradients) is bit-identical from run to run and for any
        # number of threads.
        per_slice = self.parallel_for(worker, n, min_rows=block, work=arrays[0].size)
        return [r for results in per_slice for r in results]

    def map_batch(self, fn, n, rows_per_item):
        if self._serial():                                  # already inside a thread's share
            return [fn(0, n)]
        threads = self.pool.num_threads
        whole = threads * (n // threads)                    # items that go whole to a thread

        def share(lo, hi):                                  # one thread's items, GROUP_ROWS at a time
            groups = min(hi - lo, -(-(hi - lo) * rows_per_item // GROUP_ROWS))
            bounds = [lo + (hi - lo) * g // groups for g in range(groups + 1)]
            self._local.serial = True
            try:
                return [fn(a, b) for a, b in zip(bounds, bounds[1:])]
            finally:
                self._local.serial = False

        results = []
        with self.blas.limit(1):
            if whole:
                for part in self.pool.run(share, whole, min_rows=whole // threads):
                    results.extend(part)
            if whole < n:  # the rest, a few images, row by row across the pool
                results.append(fn(whole, n))
        return results

    def blas_limit(self, n):
        """A model's forward and backward run inside ``blas_limit(1)``: its products are shared out
        by the pool with OpenBLAS at one thread, and a product small enough to run inline (a head,
        a short row sum) would otherwise wake OpenBLAS's own threads, which then spin for ~0.1 s on
        the cores the pool needs.  Swin-T at batch 1, forwards back to back
        (``tools/thread_scaling.py --model swin_tiny_patch4_window7_224``): 2 threads took 0.90x
        the time of 1 thread before, 0.63x with the cap.  OpenBLAS has one thread count per
        process, so the cap is held under a lock (``openblas.OpenBlas.limit``): another thread's
        forward on this backend waits for this one's to end."""
        return contextlib.nullcontext() if self._serial() else self.blas.limit(n)

    # --- eval kernels --------------------------------------------------------------------
    # Each shares its product out over the pool (or runs on this thread inside a map_batch share)
    # and does all its work on its share in one call, while it is in cache.  The share is a slice
    # of rows, or, when there are too few rows for that (one image), a slice of output columns.
    def _split_columns(self, rows):
        """Whether a product of ``rows`` rows is shared out by output columns (see blocking.py)."""
        return not self._serial() and rows < COLUMN_SPLIT_ROWS * self.pool.num_threads

    def _bias_act_in_blocks(self, y, bias, act):
        """``_bias_act`` on a (rows, columns) view, GELU in cache-sized blocks of rows."""
        if act is None:
            _bias_act(y, bias, None, self)
            return
        n, width = y.shape
        block = min(n, rows_per_block(width))
        scratch = [numpy.empty((block, width), y.dtype) for _ in range(3)]
        for s in range(0, n, block):
            e = min(s + block, n)
            _bias_act(y[s:e], bias, act, self, scratch=[a[:e - s] for a in scratch])

    def layernorm_linear(self, x, norm_weight, norm_bias, eps, weight, bias=None, act=None, normed=None):
        D, width = x.shape[-1], weight.shape[0]
        rows = x.reshape(-1, D)
        M = rows.shape[0]
        y = numpy.empty((M, width), x.dtype)
        ln = normed if normed is not None else numpy.empty_like(rows)
        work = _product_work(M, width, D)

        if self._split_columns(M):
            layernorm_rows(rows, norm_weight, norm_bias, eps, ln, numpy)   # few rows: here, once

            def columns(lo, hi):
                numpy.matmul(ln, weight[lo:hi].T, out=y[:, lo:hi])
                # bias[lo:hi] is the part of a partial bias that falls in these columns
                self._bias_act_in_blocks(y[:, lo:hi], None if bias is None else bias[lo:hi], act)

            self.parallel_for(columns, width, min_rows=_COLUMN_ALIGN, work=work)
        else:
            weight_t = weight.T

            def row_slice(lo, hi):
                layernorm_rows(rows[lo:hi], norm_weight, norm_bias, eps, ln[lo:hi], numpy)
                numpy.matmul(ln[lo:hi], weight_t, out=y[lo:hi])
                self._bias_act_in_blocks(y[lo:hi], bias, act)

            # no sums over rows: any split is exact
            self.parallel_for(row_slice, M, work=work)
        return y.reshape(*x.shape[:-1], width)

    def linear_residual(self, x, weight, bias, h):
        D = h.shape[-1]
        rows, stream = x.reshape(-1, x.shape[-1]), h.reshape(-1, D)
        work = _product_work(*stream.shape, rows.shape[1])

        def add(y, stream_part, bias_part):
            if bias_part is not None:
                y += bias_part
            stream_part += y

        if self._split_columns(rows.shape[0]):
            def columns(lo, hi):
                add(rows @ weight[lo:hi].T, stream[:, lo:hi], None if bias is None else bias[lo:hi])

            self.parallel_for(columns, D, min_rows=_COLUMN_ALIGN, work=work)
        else:
            weight_t = weight.T

            def row_slice(lo, hi):
                add(rows[lo:hi] @ weight_t, stream[lo:hi], bias)

            self.parallel_for(row_slice, rows.shape[0], work=work)
        return h

    def attention(self, q, k, v, num_heads, scale, bias=None):
        """Heads in cache-sized blocks, on views of q, k, v (no split copies), written straight
        into the output's head columns: runs of heads of one item where an item's scores are large
        (ViT: 197 x 197 per head), several whole items at a time where they are small (Swin's
        7 x 7 windows), so the number of NumPy calls stays low either way."""
        *lead, Nq, D = q.shape
        N, H = k.shape[-2], num_heads
        B, Dh = math.prod(lead), D // H
        q4, k4, v4 = (a.reshape(B, -1, H, Dh) for a in (q, k, v))
        out = numpy.empty((*lead, Nq, D), q.dtype)
        o4 = out.reshape(B, Nq, H, Dh)
        sb = None if bias is None else score_bias(bias, lead, H, Nq, N, numpy, q.dtype)
        c = scale * LOG2E                                   # scores in base 2 (see ops/attention.py)
        block = rows_per_block(Nq * N)                      # heads whose scores fit a block
        work = _product_work(B * H * Nq, N, 2 * Dh)

        def run(b0, b1, h0, h1):                            # items b0..b1-1, heads h0..h1-1 of each
            view = lambda a: a[b0:b1, :, h0:h1].transpose(0, 2, 1, 3)      # (items, heads, n, Dh)
            bias_ = None
            if sb is not None:
                index = sb.index.reshape(B, H)[b0:b1, h0:h1]
                bias_ = sb.items[index]                                     # (items, heads, Nq, N)
            attend(view(q4) * c, view(k4), view(v4), self, bias_, out=view(o4))

        if block >= H:                                      # whole items, block // H at a time
            def items(lo, hi):
                for b in range(lo, hi, block // H):
                    run(b, min(b + block // H, hi), 0, H)
            self.parallel_for(items, B, work=work)
            return out

        def heads(lo, hi):                                  # the (item, head) pairs lo .. hi-1
            g = lo
            while g < hi:
                b, h0 = divmod(g, H)
                h1 = min(h0 + block, H, h0 + hi - g)        # a run of heads within item b
                run(b, b + 1, h0, h1)
                g += h1 - h0

        self.parallel_for(heads, B * H, work=work)
        return out
