"""MPI for data-parallel training: ``MpiComm`` wraps an mpi4py communicator for ``npvit.train``.

    mpiexec -n 2 npvit train --data digits --out runs/d --distributed
    npvit.train.train(model, ds, eval_ds, cfg, out="run", comm=npvit.distributed.mpi_world())

Needs ``pip install 'npvit[mpi]'``: mpi4py plus the ``mpich`` wheel, which puts libmpi and
``mpiexec`` inside the environment.  Start the ranks with that environment's own ``mpiexec``
(next to ``python``): another MPI's launcher aborts MPICH ranks with a PMI error.

Every collective waits at most ``timeout`` seconds (polling a non-blocking request).  A rank
killed by a signal is noticed by ``mpiexec``, which ends the job; a rank that hangs is not, so
the ranks waiting for it print why and call ``MPI_Abort``, which ends every rank.
"""
import sys
import time

from .comm import Communicator, DistributedError

DEFAULT_TIMEOUT = 600.0  # seconds; long enough for rank 0 to write a ViT-L checkpoint meanwhile
INSTALL_HINT = "pip install 'npvit[mpi]'"


def import_mpi():
    """mpi4py's ``MPI`` module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py and an MPI library: {INSTALL_HINT} "
                          "(mpi4py plus the mpich wheel, which brings libmpi and mpiexec)") from exc
    except RuntimeError as exc:  # mpi4py installed without any libmpi: "cannot load MPI library"
        raise ImportError(f"mpi4py found no MPI library ({exc}): {INSTALL_HINT} also installs the "
                          "mpich wheel") from exc
    return MPI


class MpiComm(Communicator):
    """``npvit.distributed.comm.Communicator`` over an mpi4py communicator (COMM_WORLD by default)."""

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        self.MPI = import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None for no limit), got {timeout}")
        self.timeout = timeout

    def _sum(self, buf, what):
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def abort(self, code=1):
        """End every rank of the job now (MPI_Abort)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)  # let mpiexec forward the message before MPI_Abort tears the job down
        self.comm.Abort(code)

    def _wait(self, request, what):
        if self.timeout is None:
            request.Wait()
            return
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        # Test + short sleeps rather than MPICH's Wait, which spins a core at 100%: on a machine
        # with as many ranks as cores the spinning rank would slow the ones it waits for.
        while not request.Test():
            if time.monotonic() > deadline:
                print(f"npvit (rank {self.rank} of {self.size}): no answer from the other ranks for "
                      f"{self.timeout:g} s while {what or 'waiting'}: a rank hung or died; ending the "
                      "job", file=sys.stderr)
                self.abort(3)
            time.sleep(pause)
            pause = min(2 * pause, 2.5e-4)  # a late answer costs at most ~0.25 ms (steps take ~10 ms+)

    def __repr__(self):
        return f"MpiComm(rank={self.rank}, size={self.size}, timeout={self.timeout})"


__all__ = ["MpiComm", "DistributedError", "import_mpi", "DEFAULT_TIMEOUT"]
