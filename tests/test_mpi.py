"""Data-parallel training under a real ``mpiexec -n 2`` (the mpich wheel's, next to this Python).

The arithmetic is checked on threads in test_distributed_train.py; here the MPI path itself:
the command line, the Allreduce, resume, and that every failure ends every rank with a message.
Each job is a subprocess with a timeout, so a hang fails the test instead of stalling the suite.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
MPIEXEC = Path(sys.executable).parent / "mpiexec"  # another MPI's launcher cannot start mpich ranks
HERE = Path(__file__).parent
TIMEOUT = 300  # seconds: a generous bound on 2 shared cores; a hang ends the test here instead

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no {MPIEXEC} (pip install mpich)")


def mpiexec(*commands, cwd=None):
    """Run ``mpiexec -n 1 python ARGS : -n 1 python ARGS ...`` (one rank per command; a single
    command runs on 2 ranks); returns the CompletedProcess."""
    if len(commands) == 1:
        argv = [str(MPIEXEC), "-n", "2", sys.executable, *commands[0]]
    else:
        argv = [str(MPIEXEC)]
        for i, c in enumerate(commands):
            argv += ([":"] if i else []) + ["-n", "1", sys.executable, *c]
    env = dict(os.environ, NPVIT_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=cwd)


def digits_run(out, *extra):
    return ["-m", "npvit", "train", "--data", "digits", "--dtype", "float64", "--epochs", "2",
            "--out", str(out), "--distributed", "--quiet", *extra]


def relative_difference(a, b):
    """max over parameters of ||a - b|| / ||a|| (a norm per tensor: single elements of a tensor can
    sit at zero, like the key bias, whose gradient is zero in exact arithmetic)."""
    return max(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(a[k]) for k in a)


def test_two_ranks_train_the_digits_recipe_like_one_process(tmp_path):
    """Epoch 1 under mpiexec, then --resume under mpiexec for epoch 2, against one process."""
    import dataclasses

    from npvit.model import ViTConfig, VisionTransformer
    from npvit.train import train
    from npvit.train.checkpoint import read_checkpoint
    from npvit.train.recipes import RECIPES

    recipe = RECIPES["digits"]
    train_ds, test_ds = recipe.load()
    cfg = dataclasses.replace(recipe.train, epochs=2)

    def digits_model():
        model = VisionTransformer(ViTConfig(**recipe.model), dtype="float64")
        model.preprocess = recipe.preprocess
        return model

    one = digits_model()
    train(one, train_ds, test_ds, cfg, out=tmp_path / "one", progress=False, stop_after=1)
    after_one = {k: v.copy() for k, v in one.params.items()}
    h = train(one, train_ds, test_ds, cfg, out=tmp_path / "one", resume=True, progress=False)

    out = tmp_path / "run"
    first = mpiexec(digits_run(out, "--stop-after", "1"))
    assert first.returncode == 0, first.stderr
    _, p1, _, _ = read_checkpoint(out / "checkpoint.npz")
    second = mpiexec(digits_run(out, "--resume"))
    assert second.returncode == 0, second.stderr
    meta, p2, _, _ = read_checkpoint(out / "checkpoint.npz")

    # After one epoch (45 steps): rounding alone, since each rank sums its half of every batch
    # before the two halves are added (measured: 1e-13).
    assert relative_difference(after_one, p1) < 1e-10
    # After two epochs: still rounding, grown by the training itself -- one process started from
    # weights multiplied by (1 + 2.2e-16 noise) ends 4.6e-8 from itself (tools/rounding_growth.py);
    # the two ranks ended 7e-9 away.  A real error (one image's gradient lost) is ~1e-3.
    assert relative_difference(one.params, p2) < 1e-6
    assert relative_difference(p1, p2) > 1e-2  # the bound above is not vacuous: epoch 2 moved them
    assert [row["epoch"] for row in meta["history"]] == [1, 2] and meta["ranks"] == 2
    for mine, ref in zip(meta["history"], h):
        assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
        assert mine["eval_top1"] == ref["eval_top1"]
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.csv", "metrics.jsonl", "model.npz"]


def test_with_exact_shards_two_ranks_end_two_epochs_on_one_process_weights(tmp_path):
    """The issue's measure, met: the digits recipe in float64, 2 epochs (the second after --resume)
    under mpiexec with --exact-shards 2, against one process with exact_shards=2: every parameter
    within 1e-10 relative (the shards' gradients are added in the same order on both, so in fact
    bit for bit).  Without exact shards the same runs end 7e-9 apart (the test above)."""
    import dataclasses

    from npvit.model import ViTConfig, VisionTransformer
    from npvit.train import train
    from npvit.train.checkpoint import read_checkpoint
    from npvit.train.recipes import RECIPES

    recipe = RECIPES["digits"]
    train_ds, test_ds = recipe.load()
    one = VisionTransformer(ViTConfig(**recipe.model), dtype="float64")
    one.preprocess = recipe.preprocess
    train(one, train_ds, test_ds, dataclasses.replace(recipe.train, epochs=2, exact_shards=2), progress=False)

    out = tmp_path / "run"
    first = mpiexec(digits_run(out, "--stop-after", "1", "--exact-shards", "2"))
    assert first.returncode == 0, first.stderr
    _, p1, _, _ = read_checkpoint(out / "checkpoint.npz")
    second = mpiexec(digits_run(out, "--resume", "--exact-shards", "2"))
    assert second.returncode == 0, second.stderr
    _, p2, _, _ = read_checkpoint(out / "checkpoint.npz")
    assert relative_difference(one.params, p2) < 1e-10
    assert all(np.array_equal(one.params[k], p2[k]) for k in p2)
    assert relative_difference(p1, p2) > 1e-2  # epoch 2 moved the weights


def test_a_batch_that_does_not_divide_is_one_clear_error(tmp_path):
    run = mpiexec(digits_run(tmp_path / "run", "--batch-size", "31"))
    assert run.returncode == 2
    assert run.stderr.count("does not divide among 2 ranks") == 1, run.stderr  # said once, by rank 0
    assert "every rank (2)" in run.stderr and not (tmp_path / "run").exists()


def test_ranks_started_with_different_settings_are_refused(tmp_path):
    run = mpiexec(digits_run(tmp_path / "run", "--seed", "0"), digits_run(tmp_path / "run", "--seed", "1"))
    assert run.returncode == 2
    assert run.stderr.count("rank 1's training settings differ: seed 1 (rank 0: 0)") == 1, run.stderr


def test_a_rank_that_cannot_read_its_data_stops_every_rank():
    run = mpiexec([str(HERE / "mpi_job.py"), "raise"])
    assert run.returncode == 2, run.stderr
    assert ("error: failed while training step 3: rank 1 of 2: ValueError: cannot read training image "
            "/data/broken.png: truncated") in run.stderr
    assert "finished" not in run.stdout


def test_a_rank_that_dies_ends_the_job():
    run = mpiexec([str(HERE / "mpi_job.py"), "die"])
    assert run.returncode != 0 and "finished" not in run.stdout
    assert "BAD TERMINATION" in run.stdout + run.stderr  # mpiexec's report of the killed rank


def test_a_rank_that_hangs_is_timed_out_and_the_job_aborted():
    run = mpiexec([str(HERE / "mpi_job.py"), "hang"])
    assert run.returncode != 0 and "finished" not in run.stdout
    assert "npvit (rank 0 of 2): no answer from the other ranks for 2 s while training step 3" in run.stderr


def test_the_job_script_finishes_when_nobody_fails():
    """Positive control for the three failures above."""
    run = mpiexec([str(HERE / "mpi_job.py"), "ok"])
    assert run.returncode == 0, run.stderr
    # the two ranks share one stdout pipe, so their lines may arrive run together
    assert sorted(re.findall(r"rank (\d) of (\d): finished", run.stdout)) == [("0", "2"), ("1", "2")], run.stdout
