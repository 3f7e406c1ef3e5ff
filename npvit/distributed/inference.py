"""``dask_predict``: batch inference on a Dask cluster, each worker loading the model once.

    from dask.distributed import Client, LocalCluster              # pip install 'npvit[dask]'
    client = Client("tcp://scheduler:8786")                         # or Client(local_cluster(2))
    results = dask_predict(client, "digits", paths, topk=5, batch_size=32)

    batches     images[s:s + batch_size], one task each.  Paths travel as strings and are read on
                the workers (a path that exists here is sent absolute); arrays travel with their task.
    a worker    model = _MODELS[model, load options], loaded on its first task and kept, so nothing
                the size of the weights is ever sent: ``model`` is a path or an embedded name
                (anything ``npvit.load`` reads), opened by each worker itself
                -> npvit.predict.predict(model, batch, topk)
    results     one per image, in input order, equal to ``npvit.load(model).predict(images)``.  An
                image that cannot be read gives its exception (naming the path) in its place; the
                others go on.  A model that cannot be loaded stops the job with that error.
    failures    a worker that dies has its tasks run again on the others by Dask (up to the
                scheduler's ``allowed-failures``, 3 by default); the results are still complete.
"""
import collections
import contextlib
import os
import threading

from ..predict import _check_topk, _label_names, predict, resolve_preprocess
from ..preprocess.images import is_batch

INSTALL_HINT = "pip install 'npvit[dask]'"
_MODELS = {}                       # on a worker: (model, load options) -> the loaded model
_LOCK = threading.Lock()           # one load even when a worker runs several tasks at once
LOADS = collections.Counter()      # on a worker: how often each model was loaded (tests read it)
IMAGE_ERRORS = (ValueError, TypeError, OSError)


def import_distributed():
    """``dask.distributed``, or an ImportError that says how to install it."""
    try:
        import dask.distributed
    except ImportError as exc:
        raise ImportError(f"distributed inference needs Dask: {INSTALL_HINT}") from exc
    return dask.distributed


def local_cluster(n_workers, threads=None):
    """A ``LocalCluster`` of ``n_workers`` processes, each running npvit on ``threads`` threads
    (default: this machine's CPUs shared among them), one task at a time, no dashboard."""
    distributed = import_distributed()
    from ..backends.parallel import default_num_threads

    threads = threads or max(1, default_num_threads() // n_workers)
    # No dashboard; the scheduler's HTTP server (health checks) on a free port, not 8787, so that
    # two clusters on one machine do not compete for it.
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                                    env={"NPVIT_NUM_THREADS": str(threads)})


@contextlib.contextmanager
def connect(scheduler, timeout=30):
    """A ``Client`` for ``scheduler``: an address (``tcp://host:8786``), or ``local:N`` for a
    LocalCluster of N worker processes started here and closed with the client."""
    distributed = import_distributed()
    if scheduler.startswith("local:"):
        n = scheduler[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--scheduler {scheduler}: expected local:N with N >= 1 worker processes")
        with local_cluster(int(n)) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except OSError as exc:
        raise OSError(f"cannot reach the Dask scheduler at {scheduler} ({exc}): start one with "
                      f"`dask scheduler` and workers with `dask worker {scheduler}`") from None
    with client:
        yield client


def dask_predict(client, model, images, topk=5, batch_size=32, *, labels=None, preprocess=None,
                 dtype=None, backend="numpy", progress=None):
    """Top-``topk`` ``(label, probability)`` pairs per image, computed on ``client``'s workers.

    ``model``: a path or an embedded name such as ``"digits"`` (anything ``npvit.load`` reads),
    opened on the workers.  ``images``: one image or a list of them -- paths (read on the workers)
    or arrays.  ``labels`` / ``preprocess`` as in ``npvit.predict``; ``dtype`` / ``backend`` as in
    ``npvit.load``.  ``progress(n)`` is called with the image count of each finished batch.
    In a list, an image that cannot be read has its exception in its place; a single image's is raised.
    """
    results = [None] * _count(images)
    for start, batch in iter_batches(client, model, images, topk, batch_size, labels=labels,
                                     preprocess=preprocess, dtype=dtype, backend=backend):
        results[start:start + len(batch)] = batch
        if progress is not None:
            progress(len(batch))
    if is_batch(images):
        return results
    if isinstance(results[0], Exception):  # one image, as npvit.predict: its error is raised
        raise results[0]
    return results[0]


def iter_batches(client, model, images, topk=5, batch_size=32, *, labels=None, preprocess=None,
                 dtype=None, backend="numpy"):
    """Yield ``(start, results of images[start:start + b])`` as batches finish, in any order."""
    distributed = import_distributed()
    topk = _check_topk(topk)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path or an embedded model name (what npvit.load reads), "
                        f"opened by each worker; got {type(model).__name__}")
    items = [_for_workers(x) for x in (list(images) if is_batch(images) else [images])]
    if not items:
        raise ValueError("no images given: pass a path, an array, or a list of them")
    options = {"backend": backend, **({"dtype": dtype} if dtype is not None else {})}
    labels = list(labels) if labels is not None else None
    futures = [client.submit(_predict_batch, _for_workers(model), options, items[s:s + batch_size], s, topk,
                             labels, preprocess, pure=False)
               for s in range(0, len(items), batch_size)]
    start_of = {f.key: s for f, s in zip(futures, range(0, len(items), batch_size))}
    try:
        for future, batch in distributed.as_completed(futures, with_results=True):
            yield start_of[future.key], batch
    finally:  # an error, or the caller stopped early: do not leave the rest running
        client.cancel([f for f in futures if not f.done()])


def _predict_batch(model, options, items, start, topk, labels, preprocess):
    """On a worker: the batch's results; an image that fails gives its exception in its place."""
    net = _worker_model(model, options)  # a model that cannot be loaded fails the task, and the job
    _label_names(net, labels)           # so do labels or a preprocessing that do not fit the model
    resolve_preprocess(net, preprocess)
    kwargs = dict(topk=topk, labels=labels, preprocess=preprocess)
    try:
        return predict(net, items, batch_size=len(items), **kwargs)
    except IMAGE_ERRORS:
        pass
    results = []  # find the image(s) that spoiled the batch; the others are still predicted
    for i, item in enumerate(items, start):
        try:
            results.append(predict(net, [item], batch_size=1, **kwargs)[0])
        except IMAGE_ERRORS as exc:
            results.append(exc if isinstance(item, str) else type(exc)(f"image {i}: {exc}"))
    return results


def _worker_model(model, options):
    key = (model, tuple(sorted(options.items())))
    with _LOCK:
        if key not in _MODELS:
            from ..formats import load

            _MODELS[key] = load(model, **options)
            LOADS[model] += 1
        return _MODELS[key]


def worker_loads():
    """On a worker (``client.run(worker_loads)``): {model: times loaded in this process}."""
    return dict(LOADS)


def _for_workers(item):
    """Paths as strings (absolute when they exist here); anything else unchanged."""
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        return os.path.abspath(path) if os.path.exists(path) else path
    return item


def _count(images):
    return len(images) if is_batch(images) else 1
