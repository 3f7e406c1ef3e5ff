"""NumPy's own OpenBLAS, reached through its C functions (ctypes: no extra dependency).

* ``limit(n)`` caps OpenBLAS's thread count inside a ``with`` block (what threadpoolctl does):
  npvit's pool runs products on its own threads with OpenBLAS at one thread.
* ``corename`` names the kernel family OpenBLAS chose ("Haswell" for AVX2, "SkylakeX" for
  AVX-512, ...).  It decides the speed of every product: on this project's 2-core Zen 5 machine a
  float32 ViT-B/16 fc1 product runs at ~200 GFLOP/s on "Haswell" and ~370 on "SkylakeX".  OpenBLAS
  picks it from the CPU when it loads, unless ``OPENBLAS_CORETYPE`` says otherwise; npvit never
  overrides that choice, and the benchmark prints it.

Both are no-ops (``available`` False, ``corename`` None) when NumPy uses another BLAS.
"""
import contextlib
import ctypes
import threading

_SYMBOL_PREFIXES = ("scipy_openblas_", "openblas_")  # NumPy's wheels / a system OpenBLAS
_SYMBOL_SUFFIXES = ("64_", "")                       # 64-bit-integer builds carry a suffix


class OpenBlas:
    """Handles to the OpenBLAS that NumPy loaded (found in this process's memory map)."""

    def __init__(self):
        self._set = self._get = self._corename = None
        self._lock = threading.RLock()  # a limit inside a limit (same thread) nests
        try:
            import numpy  # noqa: F401  (loads its BLAS so the library appears in the map)

            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
        except OSError:  # not Linux: no control, products still run
            paths = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            if self._bind(lib):
                return

    def _bind(self, lib):
        for prefix in _SYMBOL_PREFIXES:
            for suffix in _SYMBOL_SUFFIXES:
                names = [f"{prefix}{verb}{suffix}" for verb in ("set_num_threads", "get_num_threads", "get_corename")]
                if all(hasattr(lib, n) for n in names):
                    self._set, self._get, self._corename = (getattr(lib, n) for n in names)
                    self._set.argtypes, self._get.restype = [ctypes.c_int], ctypes.c_int
                    self._corename.restype = ctypes.c_char_p
                    return True
        return False

    @property
    def available(self):
        return self._set is not None

    @property
    def corename(self):
        """The kernel family in use, or None without OpenBLAS."""
        return self._corename().decode() if self.available else None

    def num_threads(self):
        return self._get() if self.available else None

    @contextlib.contextmanager
    def limit(self, n):
        """Within the block OpenBLAS uses at most ``n`` threads (restored afterwards)."""
        if not self.available:
            yield
            return
        with self._lock:
            before = self._get()
            self._set(min(n, before))
            try:
                yield
            finally:
                self._set(before)
