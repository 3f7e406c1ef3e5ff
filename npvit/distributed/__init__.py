"""Beyond one machine: data-parallel training over MPI, batch inference on a Dask cluster.

    mpiexec -n 4 npvit train --data digits --out runs/d --distributed     # pip install 'npvit[mpi]'
    npvit.train.train(model, ds, eval_ds, cfg, out="run", comm=mpi_world())

    from dask.distributed import Client                                    # pip install 'npvit[dask]'
    dask_predict(Client("tcp://scheduler:8786"), "digits", paths, topk=5)

comm.py     the communicator interface the training loop uses, and its one-process stand-in
mpi.py      that interface over mpi4py (one Allreduce per training step, timeouts, no hangs)
inference.py  ``dask_predict``: batches of images on Dask workers that each load the model once

Neither engine is imported until it is used: ``import npvit`` needs NumPy alone.
"""
from .comm import DistributedError, SingleProcess


def mpi_world(timeout=None):
    """An MpiComm over ``MPI.COMM_WORLD`` (``timeout``: seconds a collective may wait; None: 600)."""
    from .mpi import DEFAULT_TIMEOUT, MpiComm

    return MpiComm(None, DEFAULT_TIMEOUT if timeout is None else timeout)


def as_communicator(comm):
    """None -> SingleProcess(); an mpi4py communicator -> MpiComm; an npvit communicator as is."""
    if comm is None:
        return SingleProcess()
    if hasattr(comm, "together") and hasattr(comm, "allreduce"):
        return comm
    if hasattr(comm, "Get_rank") and hasattr(comm, "Iallreduce"):
        from .mpi import MpiComm

        return MpiComm(comm)
    raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD) or "
                    f"npvit.distributed.mpi_world(), got {type(comm).__name__}")


def dask_predict(client, model, images, topk=5, batch_size=32, **kwargs):
    """Top-k predictions of ``images`` computed on a Dask cluster; see ``inference.dask_predict``."""
    from .inference import dask_predict as run

    return run(client, model, images, topk=topk, batch_size=batch_size, **kwargs)


__all__ = ["DistributedError", "SingleProcess", "mpi_world", "as_communicator", "dask_predict"]
