"""Array backends: the one place that knows which array library runs the math.

Op code never imports numpy or cupy. It receives a backend object and uses ``backend.xp``
(the array module) plus the few extras listed on :class:`~npvit.backends.base.Backend`.
"""
from .base import Backend, array_library_of
from .numpy_backend import NumpyBackend

_INSTANCES = {}


def available_backends():
    """Names of the backends that can run on this machine right now."""
    names = ["numpy"]
    from .cupy_backend import cupy_unavailable_reason

    if cupy_unavailable_reason() is None:
        names.append("cupy")
    return names


def get_backend(backend="numpy"):
    """Return the backend object for ``"numpy"`` or ``"cupy"`` (or pass a backend through)."""
    if isinstance(backend, Backend):
        return backend
    if backend not in ("numpy", "cupy"):
        raise ValueError(f"unknown backend {backend!r}: expected 'numpy' or 'cupy'")
    if backend not in _INSTANCES:
        if backend == "numpy":
            _INSTANCES[backend] = NumpyBackend()
        else:
            from .cupy_backend import CupyBackend

            _INSTANCES[backend] = CupyBackend()
    return _INSTANCES[backend]


__all__ = ["Backend", "NumpyBackend", "get_backend", "available_backends", "array_library_of"]
