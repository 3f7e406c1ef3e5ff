"""Using every core from NumPy: a row-splitting thread pool.

NumPy's ufuncs run on one core, but they release the GIL, so splitting an array's rows between a few
Python threads runs them on all cores.  Matrix products are split the same way, each thread calling
OpenBLAS held at one thread: the same rate as OpenBLAS's own threads on ViT's shapes, and OpenBLAS's
workers stay asleep instead of spinning (for ~0.1 s after each product they own) on the cores the
pool's elementwise work needs.

A forward hands the pool a few hundred small pieces of work (a Swin-T image: ~200 of 0.1-3 ms), so
the hand-off itself must be cheap.  The calling thread works on the first slice itself, and each
other slice goes to a worker of its own through a pair of plain locks (one to start it, one to say it
is done): a round trip costs ~50 us on this project's 2-core machine, where handing every slice
to a ``concurrent.futures.ThreadPoolExecutor`` cost ~135 us (two 32 us slices of NumPy work, median
of 3000 calls: 83 vs 165-180 us).

The thread count is ``NPVIT_NUM_THREADS`` if set, else the CPUs this process may use.
"""
import os
import threading


def default_num_threads():
    env = os.environ.get("NPVIT_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Worker:
    """A daemon thread that runs one ``fn(lo, hi)`` each time it is given one."""

    def __init__(self):
        self._start, self._done = threading.Lock(), threading.Lock()
        self._start.acquire()                       # held: the thread waits on it for a job
        self._done.acquire()                        # held: released when a job has finished
        self._job = self._outcome = None
        threading.Thread(target=self._loop, name="npvit-row", daemon=True).start()

    def _loop(self):
        while True:
            self._start.acquire()
            fn, lo, hi = self._job
            try:
                self._outcome = (True, fn(lo, hi))
            except BaseException as err:            # handed back to the caller, raised there
                self._outcome = (False, err)
            self._job = None
            self._done.release()

    def give(self, fn, lo, hi):
        self._job = (fn, lo, hi)
        self._start.release()

    def wait(self):
        """(True, result) or (False, exception) of the job given last."""
        self._done.acquire()
        outcome, self._outcome = self._outcome, None
        return outcome


class RowPool:
    """Runs ``fn(lo, hi)`` over contiguous slices of ``range(n)`` on a few threads."""

    def __init__(self, num_threads=None):
        self.num_threads = num_threads or default_num_threads()
        self._workers, self._pid = [], None
        self._running = threading.Lock()            # one run at a time uses the workers

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
        """Call ``fn(lo, hi)`` for each slice and return the results in slice order; slices run in
        parallel when there are several.  An exception in any slice is raised here, after every
        slice has finished.  A second thread calling while the workers are busy (two threads
        sharing a model, or a slice that calls back into the pool) runs its slices itself."""
        slices = self.split(n, min_rows)
        if len(slices) == 1 or not self._running.acquire(blocking=False):
            return [fn(lo, hi) for lo, hi in slices]
        try:
            return self._run_on_workers(fn, slices)
        finally:
            self._running.release()

    def _run_on_workers(self, fn, slices):
        if self._pid != os.getpid():                # first use, or a forked child: no threads yet
            self._workers, self._pid = [], os.getpid()
        while len(self._workers) < self.num_threads - 1:
            self._workers.append(_Worker())
        given = list(zip(self._workers, slices[1:]))
        for worker, (lo, hi) in given:
            worker.give(fn, lo, hi)
        outcomes = []
        try:
            try:
                outcomes.append((True, fn(*slices[0])))
            except Exception as err:                # wait for the workers before raising
                outcomes.append((False, err))
            outcomes += [worker.wait() for worker, _ in given]
        except BaseException:                       # interrupted while waiting: a worker may still
            self._workers = []                      # be busy, so the next run starts fresh ones
            raise
        for ok, value in outcomes:
            if not ok:
                raise value
        return [value for _, value in outcomes]
