"""What the training loop needs from a group of processes, and the one-process stand-in.

A communicator (``Communicator`` below; ``mpi.MpiComm`` over MPI) offers:

    rank, size             this process's place in the group
    allreduce(buf, error)  sum a NumPy buffer over the ranks, in place; ``error`` is this rank's
                           exception (or None): if any rank had one, every rank raises the same
                           DistributedError naming each failed rank and its message
    together(what)         a ``with`` block whose exceptions, on any rank, reach every rank the
                           same way (a DistributedError), so no rank is left waiting for another
    agree(parts)           check that every rank holds the same settings (a dict of small JSON
                           values); a DistributedError names what differs and on which ranks
    allgather(obj)         every rank's ``obj``, as a list in rank order
    bcast(obj)             rank 0's ``obj`` on every rank (call both where every rank arrives)

Why errors travel this way: a rank that raises and exits leaves the others blocked in their next
collective for ever (MPICH's ``mpiexec`` ends the job only when a rank is killed by a signal, not
when it exits).  So every collective carries a failure flag, and the loop turns one rank's
exception into the same error on all of them.  ``SingleProcess`` re-raises the original exception,
so a run without a communicator behaves exactly as before.
"""
import contextlib
import json

import numpy as np


class DistributedError(RuntimeError):
    """Raised on every rank alike: some rank failed, or the ranks disagree.

    ``errors`` is a list of (rank, message) for the ranks that failed (empty for a disagreement)."""

    def __init__(self, message, errors=()):
        super().__init__(message)
        self.errors = list(errors)


class Communicator:
    """The interface above, built on three primitives a subclass supplies:

    ``_sum(buf, what)``  in-place sum of a NumPy buffer over the ranks (``what`` names the phase for
                         a timeout message);  ``allgather(obj)``;  ``bcast(obj)`` from rank 0.
    """

    rank, size = 0, 1

    def allreduce(self, buf, error=None, what=""):
        """Sum the contiguous NumPy array ``buf`` over the ranks, in place, and return it.

        ``buf[-1]`` is the failure flag, set here: 1 on a rank whose ``error`` is not None.  When
        any rank failed, every rank gathers the messages and raises the same DistributedError."""
        buf[-1] = 0 if error is None else 1
        self._sum(buf, what)
        if buf[-1] != 0:
            messages = self.allgather(None if error is None else error_message(error))
            raise describe_failures(messages, self.size, what) from error
        return buf

    @contextlib.contextmanager
    def together(self, what):
        """Run the block on every rank; an exception on any rank is raised on all of them."""
        try:
            yield
        except Exception as exc:
            self.allreduce(np.zeros(1), exc, what)
            raise  # not reached: allreduce raised
        self.allreduce(np.zeros(1), None, what)

    def agree(self, parts):
        """Raise the same DistributedError on every rank unless all hold ``parts`` equal to rank 0's."""
        self.allreduce(np.zeros(1), None, "comparing the ranks' settings")  # all are here: no hang
        error = describe_disagreement(self.allgather(parts))
        if error is not None:
            raise error

    def _sum(self, buf, what):
        raise NotImplementedError

    def allgather(self, obj):
        raise NotImplementedError

    def bcast(self, obj):
        raise NotImplementedError


class SingleProcess(Communicator):
    """The communicator of a run in one process: rank 0 of 1; errors keep their own type."""

    def allreduce(self, buf, error=None, what=""):
        if error is not None:
            raise error
        return buf

    @contextlib.contextmanager
    def together(self, what):
        yield

    def agree(self, parts):
        pass

    def allgather(self, obj):
        return [obj]

    def bcast(self, obj):
        return obj

    def __repr__(self):
        return "SingleProcess()"


def describe_failures(messages, size, what):
    """One message from the gathered per-rank ``messages`` (None where a rank succeeded)."""
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    distinct = {}
    for r, m in failed:
        distinct.setdefault(m, []).append(r)
    lines = []
    for m, ranks in distinct.items():
        who = (f"every rank ({size})" if len(ranks) == size else
               ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks)) + f" of {size}")
        lines.append(f"{who}: {m}")
    head = f"failed while {what}: " if what else ""
    return DistributedError(head + "; ".join(lines), failed)


def error_message(exc):
    """``Type: message`` of an exception, as one line for the other ranks."""
    return f"{type(exc).__name__}: {exc}"


def describe_disagreement(gathered):
    """None if every rank's ``parts`` dict equals rank 0's, else a DistributedError saying how not."""
    ref = gathered[0]
    problems = []
    for rank, parts in enumerate(gathered[1:], 1):
        for key in ref:
            a, b = ref.get(key), parts.get(key)
            if _canon(a) == _canon(b):
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                fields = [f"{k} {b.get(k)!r} (rank 0: {a.get(k)!r})" for k in sorted(set(a) | set(b))
                          if _canon(a.get(k)) != _canon(b.get(k))]
                problems.append(f"rank {rank}'s {key} differ: " + ", ".join(fields))
            else:
                problems.append(f"rank {rank}'s {key} differ ({_short(b)} vs rank 0's {_short(a)})")
    if not problems:
        return None
    return DistributedError("the ranks must run the same training, but " + "; ".join(problems) +
                            ". Start every rank with the same command, data and files")


def _canon(value):
    return json.dumps(value, sort_keys=True, default=str)


def _short(value):
    text = _canon(value)
    return text if len(text) <= 80 else text[:77] + "..."
