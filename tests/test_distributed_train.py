"""Data-parallel training, in one process: K ranks as K threads joined by a small communicator.

The loop's data-parallel arithmetic (each rank's share of every batch, the flat gradient sum, the
errors every rank must see) is the same whatever carries the sums, so these checks run in seconds
on threads; tests/test_mpi.py runs the real thing under ``mpiexec``.
"""
import dataclasses
import pickle
import threading

import numpy as np
import pytest

from npvit.distributed import DistributedError, SingleProcess
from npvit.distributed.comm import Communicator
from npvit.train import TrainConfig, TrainTransform, train
from npvit.train.parallel import share
from test_train import PRE, tiny, toy_data, write_folder


class ThreadGroup:
    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=120)
        self.slots = [None] * size


class ThreadComm(Communicator):
    """Rank ``rank`` of a ThreadGroup: sums in rank order, as MPICH does for two ranks."""

    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size

    def _exchange(self, obj):
        g = self.group
        g.slots[self.rank] = obj
        g.barrier.wait()
        out = list(g.slots)
        g.barrier.wait()  # nobody overwrites a slot before everyone has read them all
        return out

    def _sum(self, buf, what):
        parts = self._exchange(buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        buf[:] = total

    def allgather(self, obj):
        return [pickle.loads(pickle.dumps(o)) for o in self._exchange(obj)]

    def bcast(self, obj):  # a copy per rank, as MPI's pickled bcast gives (no shared arrays)
        return pickle.loads(pickle.dumps(self._exchange(obj)[0]))


def run_ranks(size, fn):
    """``fn(rank, comm)`` on ``size`` threads; returns each rank's result or exception."""
    group = ThreadGroup(size)
    results = [None] * size

    def target(rank):
        try:
            results[rank] = fn(rank, ThreadComm(group, rank))
        except BaseException as exc:  # noqa: B902 -- the test inspects it
            results[rank] = exc

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results


# float64: a data-parallel step adds the same per-image terms in another order (K partial sums,
# then their sum), so the weights differ from one process's by rounding alone, ~1e-15 relative per
# step; 1e-10 leaves room for the few dozen steps here to amplify it.
RTOL, ATOL = 1e-10, 1e-13


def assert_same_weights(a, b):
    for n in a.params:
        np.testing.assert_allclose(a.params[n], b.params[n], rtol=RTOL, atol=ATOL, err_msg=n)


# --- the arithmetic: K ranks == one process -------------------------------------------------------------
@pytest.mark.parametrize("size,opt", [(2, "adamw"), (3, "adamw"), (3, "sgd")])
def test_ranks_train_like_one_process(size, opt):
    """Accumulation, label smoothing, clipping, augmentation, and a short last step whose last batch
    (2 images) is smaller than 3 ranks: rank 0 then has nothing and adds zeros.  SGD too, whose step
    (unlike AdamW's) scales with the gradient: a sum off by a factor would show."""
    data, held = toy_data(44), toy_data(10, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=6, accum_steps=2, optimizer=opt, lr=3e-3 if opt == "adamw" else 0.05,
                      warmup_epochs=1, clip_grad=0.5 if opt == "adamw" else None, label_smoothing=0.1,
                      scale=(0.5, 1.0), hflip=0.5, invert=0.2, seed=3)
    one = tiny("float64")
    h1 = train(one, data, held, cfg, progress=False)
    models = [tiny("float64") for _ in range(size)]
    results = run_ranks(size, lambda r, comm: train(models[r], data, held, cfg, progress=False, comm=comm))
    for h in results:
        assert not isinstance(h, BaseException), h
        assert [row["epoch"] for row in h] == [1, 2]
        for a, b in zip(h1, h):  # the same losses and hits, summed in another order
            for k in ("train_loss", "eval_loss", "train_top1", "eval_top1", "eval_top5", "lr"):
                assert a[k] == pytest.approx(b[k], rel=1e-9), k
    for m in models:
        assert_same_weights(one, m)
    assert not np.allclose(one.params["head.weight"], tiny("float64").params["head.weight"])  # it trained


@pytest.mark.parametrize("size", [2, 4])
def test_exact_shards_make_ranks_equal_one_process_bit_for_bit(size):
    """With exact_shards=4 every batch is 4 shards added in one pairwise tree: 2 ranks (an Allreduce
    of two) and 4 ranks (a gather, then the tree in rank order) give one process's weights exactly,
    augmentation and dropout included; without it they differ in the last bits (the test above)."""
    data, held = toy_data(40), toy_data(8, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_epochs=1, label_smoothing=0.1, clip_grad=0.5,
                      scale=(0.5, 1.0), hflip=0.5, seed=5, exact_shards=4)
    one = tiny("float64", drop_path_ratio=0.2)
    train(one, data, held, cfg, progress=False)
    models = [tiny("float64", drop_path_ratio=0.2) for _ in range(size)]
    results = run_ranks(size, lambda r, comm: train(models[r], data, held, cfg, progress=False, comm=comm))
    assert not any(isinstance(h, BaseException) for h in results), results
    for m in models:
        for n in one.params:
            np.testing.assert_array_equal(m.params[n], one.params[n], err_msg=n)
    plain = tiny("float64", drop_path_ratio=0.2)                   # the control: another order of additions
    train(plain, data, held, dataclasses.replace(cfg, exact_shards=1), progress=False)
    assert any(not np.array_equal(plain.params[n], one.params[n]) for n in one.params)


def test_exact_shards_that_the_ranks_cannot_share_are_refused():
    cfg = TrainConfig(epochs=1, batch_size=8, exact_shards=2)
    results = run_ranks(4, lambda r, comm: train(tiny(), toy_data(12), None, cfg, progress=False, comm=comm))
    assert all("exact_shards=2 does not divide among 4 ranks" in str(e) for e in results), results
    with pytest.raises(ValueError, match="power of two"):
        TrainConfig(exact_shards=3)
    with pytest.raises(ValueError, match="accum_steps=1"):
        TrainConfig(exact_shards=2, accum_steps=2)


def test_ranks_with_loss_scaling_train_like_one_process():
    """The scale is applied on each rank and the summed gradient unscaled once (float64 here: in
    float32 the two orders of addition already part by 5e-5 after these 8 AdamW steps)."""
    data = toy_data(24)
    cfg = TrainConfig(epochs=2, batch_size=6, lr=3e-3, loss_scaling=True, master_dtype="float64")
    one = tiny("float64")
    train(one, data, None, cfg, progress=False)
    models = [tiny("float64") for _ in range(2)]
    results = run_ranks(2, lambda r, comm: train(models[r], data, None, cfg, progress=False, comm=comm))
    assert not any(isinstance(h, BaseException) for h in results), results
    assert_same_weights(one, models[0])


def test_different_seeds_differ_by_far_more_than_the_tolerance():
    """Negative control for the comparisons above: a real difference fails them."""
    data = toy_data(24)
    a, b = tiny("float64"), tiny("float64")
    train(a, data, None, TrainConfig(epochs=1, batch_size=6, lr=3e-3, seed=0), progress=False)
    train(b, data, None, TrainConfig(epochs=1, batch_size=6, lr=3e-3, seed=1), progress=False)
    with pytest.raises(AssertionError):
        assert_same_weights(a, b)


def test_share_is_contiguous_and_balanced():
    for n in range(0, 40):
        for size in (1, 2, 3, 4, 7):
            parts = [share(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[r][1] == parts[r + 1][0] for r in range(size - 1))
            lengths = [hi - lo for lo, hi in parts]
            assert max(lengths) - min(lengths) <= 1
    assert [share(30, r, 4) for r in range(4)] == [(0, 7), (7, 15), (15, 22), (22, 30)]


@pytest.mark.parametrize("folder", [False, True])
def test_a_part_of_the_augmented_batch_equals_that_part_of_the_whole(tmp_path, folder):
    """The draws are the whole batch's, so ranks making their parts make one process's batch."""
    if folder:
        pytest.importorskip("PIL")
        from npvit.train import ImageFolderDataset
        write_folder(tmp_path, ["a", "b"], n=5, size=12)
        data = ImageFolderDataset(tmp_path)
    else:
        data = toy_data(12)
    transform = TrainTransform(PRE, scale=(0.3, 1.0), hflip=0.5, invert=0.5)
    idx = np.array([7, 2, 9, 0, 4, 1, 8])
    whole = transform(data, idx, np.random.default_rng(5))
    for lo, hi in [(0, 3), (3, 7), (2, 5), (6, 7), (0, 7)]:
        part = transform(data, idx, np.random.default_rng(5), part=slice(lo, hi))
        assert np.array_equal(part, whole[lo:hi]), (lo, hi)
    other = transform(data, idx, np.random.default_rng(6), part=slice(0, 3))
    assert not np.array_equal(other, whole[:3])  # and the draws do matter


# --- errors reach every rank --------------------------------------------------------------------------
def test_a_batch_that_does_not_divide_among_the_ranks_is_refused_on_every_rank():
    data = toy_data(12)
    results = run_ranks(2, lambda r, comm: train(tiny(), data, None, TrainConfig(epochs=1, batch_size=5),
                                                 progress=False, comm=comm))
    for exc in results:
        assert isinstance(exc, DistributedError)
        assert "every rank (2)" in str(exc) and "batch of 5 images does not divide among 2 ranks" in str(exc)


def test_ranks_that_disagree_are_refused_with_what_differs():
    data = toy_data(12)
    results = run_ranks(2, lambda r, comm: train(tiny(), data, None, TrainConfig(epochs=1, batch_size=4, seed=r),
                                                 progress=False, comm=comm))
    for exc in results:
        assert isinstance(exc, DistributedError)
        assert "rank 1's training settings differ: seed 1 (rank 0: 0)" in str(exc)
    # different data and different initial weights (another model seed) are caught too
    results = run_ranks(2, lambda r, comm: train(tiny(), toy_data(12, seed=r), None,
                                                 TrainConfig(epochs=1, batch_size=4), progress=False, comm=comm))
    for exc in results:
        assert isinstance(exc, DistributedError)
        assert "rank 1's training data differ" in str(exc)
    results = run_ranks(2, lambda r, comm: train(tiny(seed=r), data, None, TrainConfig(epochs=1, batch_size=4),
                                                 progress=False, comm=comm))
    for exc in results:
        assert isinstance(exc, DistributedError)
        assert "rank 1's starting weights differ" in str(exc)


class FailingData:
    """A dataset whose images fail on one rank at one call (a file that one host cannot read)."""

    def __init__(self, data, fail, rank):
        self.data, self.fail, self.rank, self.calls = data, fail, rank, 0
        self.labels, self.label_names = data.labels, data.label_names

    def __len__(self):
        return len(self.data)

    def images(self, indices):
        self.calls += 1
        if self.rank == 1 and self.calls == self.fail:
            raise ValueError("cannot read training image /data/x.png: truncated")
        return self.data.images(indices)


def test_one_ranks_exception_is_raised_on_every_rank(tmp_path):
    data = toy_data(16)
    cfg = TrainConfig(epochs=2, batch_size=4, augment=False)

    def run(rank, comm):
        return train(tiny(), FailingData(data, 3, rank), None, cfg, out=tmp_path / f"r{rank}", progress=False,
                     comm=comm)

    results = run_ranks(2, run)
    for exc in results:
        assert isinstance(exc, DistributedError)
        assert str(exc) == ("failed while training step 3: rank 1 of 2: ValueError: cannot read training "
                            "image /data/x.png: truncated")
        assert exc.errors == [(1, "ValueError: cannot read training image /data/x.png: truncated")]
    assert isinstance(results[1].__cause__, ValueError)  # the failing rank keeps its traceback
    assert not (tmp_path / "r1").exists()                # only rank 0 writes


def test_single_process_keeps_the_original_exception_types(tmp_path):
    comm = SingleProcess()
    with pytest.raises(ValueError, match="does not divide"):
        with comm.together("x"):
            raise ValueError("does not divide")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(), toy_data(8), None, TrainConfig(epochs=1), out=tmp_path, resume=True, progress=False,
              comm=comm)


def test_resume_with_another_number_of_ranks(tmp_path):
    """2 ranks for one epoch, then 3 ranks resume (rank 0 reads the checkpoint and sends it)."""
    data = toy_data(36)
    cfg = TrainConfig(epochs=2, batch_size=6, lr=3e-3, label_smoothing=0.1)
    one = tiny("float64")
    train(one, data, None, cfg, progress=False)
    out = tmp_path / "run"
    results = run_ranks(2, lambda r, comm: train(tiny("float64"), data, None, cfg, out=out, stop_after=1,
                                                 progress=False, comm=comm))
    assert all(len(h) == 1 for h in results), results
    models = [tiny("float64", seed=10 + r) for r in range(3)]  # the weights must come from the checkpoint...
    results = run_ranks(3, lambda r, comm: train(models[r], data, None, cfg, out=out, resume=True,
                                                 progress=False, comm=comm))
    assert results[0] is not None and not isinstance(results[0], BaseException), results
    for m in models:
        assert_same_weights(one, m)


def test_importing_npvit_and_its_training_loop_pulls_in_neither_engine():
    import subprocess
    import sys

    code = ("import sys, npvit, npvit.train, npvit.distributed, npvit.cli.train, npvit.cli.predict; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
