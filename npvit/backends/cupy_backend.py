"""The CuPy backend: the same op code on an NVIDIA GPU.

This is the only file in npvit that imports cupy, and only when this backend is asked for.
"""
from .base import Backend


def cupy_unavailable_reason():
    """None when CuPy can run here; otherwise a sentence saying why not and what to do."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'npvit[cuda]', i.e. a cupy-cuda12x/13x wheel)"
    try:
        if not cupy.cuda.is_available():
            return "CuPy is installed but no CUDA GPU/driver is visible on this machine"
    except Exception as exc:  # a broken driver install raises instead of answering False
        return f"CuPy cannot reach a GPU: {exc}"
    return None


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self):
        reason = cupy_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"the cupy backend is not available: {reason}")
        import cupy
        import cupyx.scipy.special

        self.xp = cupy
        self._erf = cupyx.scipy.special.erf

    def to_numpy(self, x):
        return self.xp.asnumpy(x)

    def erf(self, x):
        return self._erf(x)

    def index_add(self, dst, index, values):
        # a fancy-indexed += keeps one of several writes to the same place on a GPU; scatter_add sums them
        import cupyx

        cupyx.scatter_add(dst, index, values)
