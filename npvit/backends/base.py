"""The backend interface: ``xp`` plus a short list of extras the array module lacks.

Extras, each with a plain ``xp`` version here that CuPy (and any future backend) inherits, and
that a backend may replace with something faster (the NumPy backend does; tests compare each
fused kernel with its twin):

* math:        ``erf`` (NumPy has none), ``exp2``, ``gelu_exact``, ``index_add`` (a scatter-add);
* eval kernels: ``layernorm_linear`` (LayerNorm feeding a linear layer, optionally + GELU),
  ``linear_residual`` (a linear layer added into the residual stream), ``attention``
  (multi-head attention on q, k, v views with an optional additive score bias);
* execution:   ``rowwise`` (how row-independent work is run), ``map_batch`` (how an eval forward
  is shared out), ``blas_limit`` (the BLAS thread cap), ``prepare_memory`` (allocator tuning);
* data:        ``asarray`` that refuses arrays from another device, ``to_numpy``/``from_numpy``,
  ``rng`` for reproducible dropout masks.
"""
import contextlib
import math

from ..ops.activations import gelu_rows
from ..ops.attention import LOG2E, attend
from ..ops.layernorm import layernorm_rows


def array_library_of(x):
    """'cupy' for a CuPy array, 'numpy' for anything else (checked by type, never by import)."""
    return "cupy" if type(x).__module__.split(".")[0] == "cupy" else "numpy"


class Backend:
    """An array module (``xp``) and the extras npvit needs beyond it (see the module docstring)."""

    name = "abstract"
    xp = None

    # --- moving data ---------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """Wrap ``x`` as this backend's array; a foreign-device array is an error, not a copy."""
        found = array_library_of(x)
        if found != self.name and found == "cupy":
            raise TypeError(
                f"got a CuPy (GPU) array but this model runs on the {self.name} backend: "
                "bring it to the host with x.get(), or move the model with model.to('cupy')"
            )
        if found != self.name and self.name == "cupy" and hasattr(x, "__array_interface__"):
            raise TypeError(
                "got a NumPy (host) array but this model runs on the cupy backend: "
                "copy it to the GPU with cupy.asarray(x), or move the model with model.to('numpy')"
            )
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        raise NotImplementedError

    def from_numpy(self, x, dtype=None):
        """Copy a host array onto this backend (the explicit, deliberate transfer)."""
        return self.xp.asarray(x, dtype=dtype)

    def rng(self, seed=None):
        """A random generator on this backend (``seed`` may be an int or ``None``)."""
        return self.xp.random.default_rng(seed)

    # --- math extras -----------------------------------------------------------------
    def erf(self, x):
        raise NotImplementedError

    def exp2(self, x, out=None):
        """2^x (``out`` may be ``x``): softmax's exponential, kept in base 2 (ops/attention.py);
        a backend may compute it through whichever of its exponentials is faster."""
        return self.xp.exp2(x, out=out)

    def gelu_exact(self, x, out, deriv=None, scratch=None):
        """out = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); ``out`` may be ``x``.  With ``deriv`` (an
        array like ``x``) also GELU'(x) = Phi(x) + x phi(x) there, for the backward.  ``scratch``
        (arrays like ``x`` a fused kernel may use) is ignored here."""
        cdf = self.erf(x * _INV_SQRT2)
        cdf += 1.0
        cdf *= 0.5                                                  # Phi(x)
        if deriv is not None:
            pdf = self.xp.exp(-0.5 * x * x) * _INV_SQRT_2PI         # phi(x)
            self.xp.add(cdf, x * pdf, out=deriv)
        self.xp.multiply(x, cdf, out=out)

    def index_add(self, dst, index, values):
        """dst[index] += values, summing repeated indices (NumPy's ``add.at``)."""
        self.xp.add.at(dst, index, values)

    # --- eval kernels (plain twins) ------------------------------------------------------
    def layernorm_linear(self, x, norm_weight, norm_bias, eps, weight, bias=None, act=None, normed=None):
        """y = act(LayerNorm(x) weight^T + bias) for x (..., D) -> (..., out).

        ``bias`` may be shorter than ``out``: it covers the leading columns (attention's qkv with
        its k and v biases folded away covers only q).  ``act``: None or a GELU kind.  ``normed``,
        a (rows, D) array, receives LayerNorm(x) for a caller that needs it too."""
        xp, D = self.xp, x.shape[-1]
        rows = x.reshape(-1, D)
        ln = normed if normed is not None else xp.empty_like(rows)
        layernorm_rows(rows, norm_weight, norm_bias, eps, ln, xp)
        y = ln @ weight.T
        _bias_act(y, bias, act, self)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def linear_residual(self, x, weight, bias, h):
        """h += x weight^T + bias, in place; returns h."""
        y = x @ weight.T
        if bias is not None:
            y += bias
        h += y.reshape(h.shape)
        return h

    def attention(self, q, k, v, num_heads, scale, bias=None):
        """softmax(scale q k^T + bias) v per head, for q (..., Nq, D) and k, v (..., N, D) (views
        into a qkv tensor are fine); ``bias`` broadcastable to (..., H, Nq, N).  -> (..., Nq, D)."""
        xp = self.xp
        *lead, Nq, D = q.shape
        H = num_heads

        def heads(a):                                                        # (..., H, n, Dh)
            return xp.moveaxis(a.reshape(*a.shape[:-1], H, D // H), -2, -3)

        b2 = None if bias is None else xp.asarray(bias, dtype=q.dtype) * LOG2E
        out = attend(heads(q) * (scale * LOG2E), heads(k), heads(v), self, b2)
        return xp.moveaxis(out, -3, -2).reshape(*lead, Nq, D)

    # --- execution ---------------------------------------------------------------------
    def rowwise(self, fn, *arrays, blocked=False, row_size=None):
        """Apply ``fn`` to slices of ``arrays`` along their shared first axis; return its results.

        Ops put their row-independent math in ``fn`` (matrix products included) and let the
        backend choose how to run it.  This plain version calls ``fn(*arrays)`` once (a GPU runs
        the whole array at once).  The NumPy backend splits the rows across its threads: in one
        call per thread (large matrix products), or with ``blocked=True`` in cache-sized blocks of
        rows, sized for rows of ``row_size`` elements (default: the widest array's rows), whose
        boundaries do not depend on the thread count (so sums over blocks are reproducible)."""
        return [fn(*arrays)]

    def map_batch(self, fn, n, rows_per_item):
        """Call ``fn(lo, hi)`` over slices of ``range(n)`` (images of an eval forward, each
        ``rows_per_item`` token rows) and return the results in order.  Here: one call; the NumPy
        backend gives each thread whole images."""
        return [fn(0, n)]

    def blas_limit(self, n):
        """A context in which the BLAS uses at most ``n`` threads (here: nothing to limit)."""
        return contextlib.nullcontext()

    def prepare_memory(self):
        """Called by the model before a forward: a backend may tune its allocator here."""
        return False

    def __repr__(self):
        return f"<npvit backend {self.name}>"


def _bias_act(y, bias, act, backend, scratch=None):
    """y[:, :len(bias)] += bias, then y = act(y), in place (the tail of ``layernorm_linear``);
    ``scratch``: arrays like ``y`` a fused GELU may use."""
    if bias is not None:
        y[:, :bias.shape[0]] += bias
    if act is not None:
        gelu_rows(y, act, backend, y, scratch=scratch)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
