"""What a second thread buys in one Python process, on this machine.

    python tools/thread_scaling.py                      # NumPy calls of three sizes, and two controls
    python tools/thread_scaling.py --model swin_tiny_patch4_window7_224 --batch 1   # also npvit, 1 vs 2 pool threads

Two threads each run the same loop on arrays of their own, started together; the figure is the
slower one's loop time over the time one loop takes alone (paired, median of ``--rounds``): 1.0
means the second core came free, 2.0 that the two ran one after the other.  The same loops in two
processes (no shared GIL) separate what the GIL costs from what the machine's two cores lose when
both are busy; ``hashlib`` in two threads (the GIL released for 48 us calls, no NumPy) is a control.
A loop of matrix products (OpenBLAS at one thread per caller, the GIL released for the whole
call) shows what the two cores give to work the GIL does not touch: the hardware's own ceiling.
With ``--model``, npvit's forward on the pool with 1 and with 2 threads, paired.
"""
import argparse
import hashlib
import multiprocessing
import os
import sys
import threading
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # each loop's products on its own thread (read at NumPy's import)
import numpy as np  # noqa: E402

CALLS = [("3 us NumPy calls", 1 << 14, 20000), ("30 us NumPy calls", 1 << 17, 2000), ("300 us NumPy calls", 1 << 20, 200)]


def numpy_loop(size, calls):
    x = np.random.default_rng(0).random(size, dtype=np.float32)

    def run():
        for _ in range(calls):
            np.multiply(x, 1.0001, out=x)
    return run


def product_loop(calls=20):
    """~12 ms products, the shape of an S/16 fc1 on half a batch-8 training step's rows."""
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal(shape, dtype=np.float32) for shape in ((788, 384), (384, 1536)))
    out = np.empty((788, 1536), np.float32)

    def run():
        for _ in range(calls):
            np.matmul(x, w, out=out)
    return run


def hash_loop(calls=2000):
    data = b"x" * (1 << 16)

    def run():
        for _ in range(calls):
            hashlib.sha256(data).digest()
    return run


def timed(run, barrier=None):
    if barrier is not None:
        barrier.wait()
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def two_threads(make):
    """The slower of two threads' loop times, both started together."""
    barrier, times = threading.Barrier(2), []
    threads = [threading.Thread(target=lambda run=make(): times.append(timed(run, barrier))) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return max(times)


def _process_worker(loop, args, barrier, queue):
    queue.put(timed(loop(*args), barrier))


def two_processes(loop, *args):
    """The slower of two processes' ``loop(*args)`` times, both started together (start-up not
    counted)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(loop, args, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    times = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return max(times)


def paired(make, rounds, together):
    ratios = []
    for _ in range(rounds):
        alone = timed(make())
        ratios.append(together() / alone)
    return np.median(ratios), min(ratios), max(ratios)


def show(label, stats):
    med, lo, hi = stats
    print(f"  {label:<34} {med:5.2f}  ({lo:.2f}-{hi:.2f})")


def npvit_pool(model_name, batch, rounds):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import npvit
    from npvit.backends.parallel import RowPool

    model = npvit.create_model(model_name)
    x = np.random.default_rng(0).standard_normal((batch, 3, *model.config.img_size)).astype(np.float32)
    pools = {1: RowPool(1), 2: RowPool(2)}
    times = {1: [], 2: []}
    for threads in (1, 2):
        model.backend.pool = pools[threads]
        model.forward(x)
    for _ in range(rounds):
        for threads in (1, 2):
            model.backend.pool = pools[threads]
            t = time.perf_counter()
            model.forward(x)
            times[threads].append(time.perf_counter() - t)
    ratios = np.array(times[2]) / np.array(times[1])
    print(f"  npvit {model_name} batch {batch}: 1 thread {np.median(times[1]) * 1e3:.1f} ms, "
          f"2 threads {np.median(times[2]) * 1e3:.1f} ms; 2/1 {np.median(ratios):.2f} "
          f"({ratios.min():.2f}-{ratios.max():.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", help="also time this npvit model's forward on 1 and 2 pool threads")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, NumPy {np.__version__}")
    print("the slower of two loops run at once / one loop run alone (median, range):")
    for label, size, calls in CALLS:
        make = lambda size=size, calls=calls: numpy_loop(size, calls)
        show(f"2 threads, {label}", paired(make, args.rounds, lambda: two_threads(make)))
        show(f"2 processes, {label}", paired(make, args.rounds, lambda: two_processes(numpy_loop, size, calls)))
    show("2 threads, 12 ms matrix products", paired(product_loop, args.rounds, lambda: two_threads(product_loop)))
    show("2 processes, 12 ms matrix products", paired(product_loop, args.rounds, lambda: two_processes(product_loop)))
    show("2 threads, 48 us hashlib calls", paired(hash_loop, args.rounds, lambda: two_threads(hash_loop)))
    if args.model:
        npvit_pool(args.model, args.batch, args.rounds)


if __name__ == "__main__":
    main()
