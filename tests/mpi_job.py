"""Jobs that tests/test_mpi.py starts under ``mpiexec -n 2``: a tiny data-parallel training in which
rank 1 fails at its third batch, one way or another.

    python tests/mpi_job.py die      rank 1 is killed (SIGKILL): mpiexec ends the job
    python tests/mpi_job.py raise    rank 1 cannot read an image: both ranks raise DistributedError
    python tests/mpi_job.py hang     rank 1 stops answering: rank 0 times out (2 s) and aborts the job
    python tests/mpi_job.py ok       nobody fails
"""
import os
import signal
import sys
import time

from test_train import tiny, toy_data

from npvit.distributed import DistributedError, mpi_world
from npvit.train import TrainConfig, train


class Faulty:
    """``data`` whose third batch fails on rank 1 in the way ``mode`` says."""

    def __init__(self, data, mode, rank):
        self.data, self.mode, self.rank, self.calls = data, mode, rank, 0
        self.labels, self.label_names = data.labels, data.label_names

    def __len__(self):
        return len(self.data)

    def images(self, indices):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "raise":
                raise ValueError("cannot read training image /data/broken.png: truncated")
            if self.mode == "hang":
                time.sleep(600)
        return self.data.images(indices)


def main(mode):
    comm = mpi_world(timeout=2.0 if mode == "hang" else 120.0)
    data = Faulty(toy_data(32), mode, comm.rank)
    try:
        train(tiny(), data, None, TrainConfig(epochs=2, batch_size=4, augment=False), progress=False, comm=comm)
    except DistributedError as exc:
        if comm.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"rank {comm.rank} of {comm.size}: finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
