"""Using every core from NumPy: a row-splitting thread pool.

NumPy's ufuncs run on one core, but they release the GIL, so splitting an array's rows between a few
Python threads runs them on all cores.  Matrix products are split the same way, each thread calling
OpenBLAS held at one thread: the same rate as OpenBLAS's own threads on ViT's shapes, and OpenBLAS's
workers stay asleep instead of spinning (for ~0.1 s after each product they own) on the cores the
pool's elementwise work needs.

The thread count is ``NPVIT_NUM_THREADS`` if set, else the CPUs this process may use.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor


def default_num_threads():
    env = os.environ.get("NPVIT_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class RowPool:
    """Runs ``fn(lo, hi)`` over contiguous slices of ``range(n)`` on a few threads."""

    def __init__(self, num_threads=None):
        self.num_threads = num_threads or default_num_threads()
        self._executor = None
        self._lock = threading.Lock()

    def _pool(self):
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="npvit")
            return self._executor

    def split(self, n, min_rows=1):
        """At most ``num_threads`` contiguous (lo, hi) slices of ``range(n)``.

        Every boundary is a multiple of ``min_rows``, so a caller that works in blocks of
        ``min_rows`` sees the same blocks whatever the number of threads."""
        step = max(1, min_rows)
        n_blocks = -(-n // step)
        parts = max(1, min(self.num_threads, n_blocks))
        bounds = [min(n, (n_blocks * i // parts) * step) for i in range(parts + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i + 1] > bounds[i]]

    def run(self, fn, n, min_rows=1):
        """Call ``fn(lo, hi)`` for each slice; slices run in parallel when there are several."""
        slices = self.split(n, min_rows)
        if len(slices) == 1:
            return [fn(*slices[0])]
        futures = [self._pool().submit(fn, lo, hi) for lo, hi in slices]
        return [f.result() for f in futures]  # re-raises a worker's exception here
