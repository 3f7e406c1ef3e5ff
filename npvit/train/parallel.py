"""The data-parallel parts of the training loop: each rank's share, the flat gradient buffer, the
settings every rank must agree on.

    share(n, rank, K)        rows [lo, hi) of a batch of n that ``rank`` of K takes: contiguous, as
                             even as possible (n = 30, K = 4: 7, 8, 7, 8 images)
    GradientBuffer           [ grad_0 | grad_1 | ... | loss sum | top-1 hits | failure flag ]
                             one host array in the model's dtype, summed over the ranks by one
                             Allreduce per optimizer step; the gradients come back as views of it
    run_settings(...)        what the ranks compare before anything else (small JSON values and
                             digests of the data); the weights are compared once loaded
    tree_sum(parts, add)     ((p0 + p1) + (p2 + p3)) + ...: the fixed order of ``exact_shards``
"""
import hashlib

import numpy as np


def tree_sum(parts, add):
    """Pairwise sum in a fixed order, ((p0 + p1) + (p2 + p3)) + ...: any aligned power-of-two run of
    ``parts`` is a subtree, so K ranks summing their own runs, then their results in rank order,
    add exactly what one process adds."""
    while len(parts) > 1:
        pairs = [add(a, b) for a, b in zip(parts[::2], parts[1::2])]
        parts = pairs + parts[len(pairs) * 2:]
    return parts[0]


def share(n, rank, size):
    """(lo, hi): the contiguous rows of ``n`` that ``rank`` of ``size`` takes."""
    return rank * n // size, (rank + 1) * n // size


class GradientBuffer:
    """The step's gradients, loss sum and top-1 hits in one flat host buffer."""

    def __init__(self, model, names):
        self.backend, self.dtype = model.backend, model.dtype
        self.names = list(names)
        self.shapes = [tuple(model.params[k].shape) for k in self.names]
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.buf = np.zeros(int(self.offsets[-1]) + 3, dtype=model.dtype)     # + loss, hits, flag

    def reduce(self, comm, grads, loss_sum, hits, error, what, tree=False):
        """Sum this rank's ``grads`` (None: no images this step), loss sum and hits over the ranks.

        Returns (gradients as views of the summed buffer, on the model's backend; loss sum; hits).
        ``error``: this rank's exception, which every rank then raises (see comm.allreduce).
        ``tree``: add the ranks' buffers in ``tree_sum``'s order (an Allreduce of more than two
        may add them in any order), by gathering them instead."""
        buf, host = self.buf, self.backend.to_numpy
        for k, lo, hi in zip(self.names, self.offsets[:-1], self.offsets[1:]):
            buf[lo:hi] = 0 if grads is None or error is not None else host(grads[k]).ravel()
        buf[-3], buf[-2] = (loss_sum, hits) if error is None else (0, 0)
        if tree and comm.size > 2:
            comm.allreduce(np.zeros(1), error, what)        # a failure on any rank raises on all
            buf[:-1] = tree_sum(comm.allgather(buf[:-1].copy()), lambda a, b: a + b)
        else:  # two ranks: a + b is b + a, bit for bit
            comm.allreduce(buf, error, what)
        summed = {k: buf[lo:hi].reshape(shape)
                  for k, shape, lo, hi in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])}
        if self.backend.name != "numpy":
            summed = {k: self.backend.from_numpy(g, dtype=self.dtype) for k, g in summed.items()}
        return summed, float(buf[-3]), int(round(float(buf[-2])))


def weights_digest(model):
    """A digest of every parameter's bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(model.params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model.backend.to_numpy(model.params[name])).data)
    return h.hexdigest()


def data_digest(dataset):
    """``dataset.fingerprint()``, or for other dataset types its length and labels."""
    if dataset is None:
        return None
    if hasattr(dataset, "fingerprint"):
        return dataset.fingerprint()
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(np.asarray(dataset.labels, dtype=np.int64)).data)
    return f"{len(dataset)}:{h.hexdigest()}"


def run_settings(model, cfg, train_data, eval_data, resume, stop_after):
    """What every rank of a run must hold alike, as JSON values (compared with ``comm.agree``)."""
    pre = model.preprocess
    return {
        "training settings": cfg.to_dict(),
        "model settings": {"config": model.config.to_dict(), "dtype": str(model.dtype),
                           "backend": model.backend.name,
                           "preprocess": pre.to_dict() if pre is not None else None},
        "training data": data_digest(train_data),
        "evaluation data": data_digest(eval_data),
        "run settings": {"resume": bool(resume), "stop_after": stop_after},
    }
