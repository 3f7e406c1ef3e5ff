"""Keep freed activation memory in the process for the next step (glibc's malloc, through ctypes).

A training step allocates a few hundred MiB of activations and frees them during the backward.
glibc hands arrays above 128 KiB (a threshold that grows with use) to fresh ``mmap`` pages, and
returns the free top of its heap to the system; the next step then pays a page fault for every
4 KiB it touches again.  Measured on a ViT-S/16 batch-8 training step (2 cores): 50,000 faults
(200 MiB) per step, and 1086 -> 1000 ms median once they are gone.  PyTorch users get the same effect
by preloading jemalloc or tcmalloc.

``keep_freed_memory()`` sets, once per process:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest): arrays below it come from the heap, so a freed
  one's pages are reused by the next allocation;
* ``M_TRIM_THRESHOLD`` = 2**31 - 1: the heap's free top is not handed back to the system.

The peak memory is unchanged (the same arrays are alive at the peak); what changes is that memory
freed after the peak stays with the process until it exits.  Anyone who has tuned malloc themselves
(``GLIBC_TUNABLES`` with a malloc setting, or a ``MALLOC_*_`` variable) keeps their settings:
npvit then changes nothing.  On other C libraries this does nothing.
"""
import ctypes
import ctypes.util
import os
import threading

M_TRIM_THRESHOLD = -1       # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2 ** 31 - 1

_lock = threading.Lock()
_in_force = None  # None: not tried yet; then True or False


def user_tuned_malloc(env):
    """True when the environment already carries the user's malloc settings."""
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return True
    return any(name.startswith("MALLOC_") and name.endswith("_") for name in env)


def keep_freed_memory(env=None):
    """Apply the two settings above, once per process; returns whether they are in force."""
    global _in_force
    with _lock:
        if _in_force is None:
            _in_force = not user_tuned_malloc(os.environ if env is None else env) and _mallopt_both()
        return _in_force


def _mallopt_both():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1  # 1: done
