"""The backend interface: ``xp`` plus a short list of extras the array module lacks."""
import math


def array_library_of(x):
    """'cupy' for a CuPy array, 'numpy' for anything else (checked by type, never by import)."""
    return "cupy" if type(x).__module__.split(".")[0] == "cupy" else "numpy"


class Backend:
    """An array module (``xp``) and the extras npvit needs beyond it.

    Extras: ``erf`` (NumPy has none), ``asarray`` that refuses arrays from another device,
    ``to_numpy`` to bring results home, ``rng`` for reproducible dropout masks, ``gelu_exact``
    (plain here; a fused kernel where a backend has one), ``rowwise`` (how
    row-independent work is run) and ``prepare_memory`` (allocator tuning before a forward).
    """

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

    def gelu_exact(self, x, out, deriv=None):
        """out = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); ``out`` may be ``x``.  With ``deriv`` (an
        array like ``x``) also GELU'(x) = Phi(x) + x phi(x) there, for the backward.  The plain
        twin of the NumPy backend's fused float32 kernel (tests compare the two)."""
        cdf = self.erf(x * _INV_SQRT2)
        cdf += 1.0
        cdf *= 0.5                                                  # Phi(x)
        if deriv is not None:
            pdf = self.xp.exp(-0.5 * x * x) * _INV_SQRT_2PI         # phi(x)
            self.xp.add(cdf, x * pdf, out=deriv)
        self.xp.multiply(x, cdf, out=out)

    # --- execution extras --------------------------------------------------------------
    def prepare_memory(self):
        """Called by the model before a forward: a backend may tune its allocator here."""
        return False

    def rowwise(self, fn, *arrays, block=None):
        """Apply ``fn`` to slices of ``arrays`` along their shared first axis; return its results.

        Ops put their row-independent math in ``fn`` (matrix products included) and let the
        backend choose how to run it.  This plain version calls ``fn(*arrays)`` once (a GPU runs
        the whole array at once).  The NumPy backend splits the rows across its threads, with BLAS
        single-threaded inside each: in blocks of ``block`` rows (that stay in cache, and whose
        boundaries do not depend on the thread count), or with ``block=None`` in one call per
        thread (large matrix products).
        """
        return [fn(*arrays)]

    def __repr__(self):
        return f"<npvit backend {self.name}>"


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
