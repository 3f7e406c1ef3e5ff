"""Batch inference on a Dask cluster: two worker processes on this machine, the embedded digits model.

Results are compared with ``npvit.load("digits").predict`` in this process: the same labels in the
same order, and probabilities within 1e-5 relative.  They are not bit for bit the same: in float32
the products' rounding depends on how many images a batch holds and on the thread count (the
workers run one thread each).  That moves logits of magnitude ~5 by ~1e-6, and a probability's
relative error is that of its logit differences (measured: up to 1.7e-6).
"""
import io
import os
import signal
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import npvit

pytest.importorskip("dask.distributed")
import dask                                                     # noqa: E402
from npvit.distributed import dask_predict                     # noqa: E402
from npvit.distributed.inference import local_cluster, worker_loads  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    with local_cluster(2, threads=1) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    return npvit.load("digits")


def assert_same(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        if isinstance(r, Exception):
            assert type(g) is type(r) and str(g) == str(r)
            continue
        assert [label for label, _ in g] == [label for label, _ in r]
        np.testing.assert_allclose([p for _, p in g], [p for _, p in r], rtol=1e-5, atol=1e-9)


def digit_arrays(n, seed=0):
    """``n`` scikit-learn digits as float (8, 8) images in [0, 1]."""
    from npvit.train.datasets import digits_arrays

    images, _ = digits_arrays()
    return list(images[np.random.default_rng(seed).permutation(len(images))[:n]])


def test_arrays_and_paths_give_what_predict_gives_here(client, digits, tmp_path):
    arrays = digit_arrays(40)
    got = dask_predict(client, "digits", arrays, topk=3, batch_size=8)
    assert_same(got, digits.predict(arrays, topk=3))  # in input order
    paths = [str(DATA / "digit_3.png"), str(DATA / "digit_7.png"), DATA / "chelsea.png"]
    got = dask_predict(client, "digits", paths, topk=2, batch_size=2)
    assert_same(got, digits.predict([str(p) for p in paths], topk=2))
    assert got[0][0][0] == "3" and got[1][0][0] == "7"
    one = dask_predict(client, "digits", str(DATA / "digit_7.png"), topk=1)  # one image, one list
    assert_same([one], [digits.predict(str(DATA / "digit_7.png"), topk=1)])


def test_each_worker_loads_the_model_once(client):
    dask_predict(client, "digits", digit_arrays(60), topk=1, batch_size=4)    # 15 tasks
    dask_predict(client, "digits", digit_arrays(20, seed=1), topk=1, batch_size=4)
    loads = [counts.get("digits", 0) for counts in client.run(worker_loads).values()]
    assert sum(loads) >= 1 and max(loads) == 1, loads


def test_an_unreadable_image_is_reported_for_its_path_and_the_rest_go_on(client, digits, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "gone.png"
    paths = [str(DATA / "digit_3.png"), str(bad), str(DATA / "digit_7.png"), str(missing)]
    got = dask_predict(client, "digits", paths, topk=2, batch_size=4)
    assert isinstance(got[1], ValueError) and str(bad) in str(got[1])
    assert isinstance(got[3], OSError) and str(missing) in str(got[3])
    assert_same([got[0], got[2]], digits.predict([paths[0], paths[2]], topk=2))
    with pytest.raises(ValueError, match="broken.png"):  # a single image: raised, as predict does
        dask_predict(client, "digits", str(bad))


def test_a_model_the_workers_cannot_load_stops_the_job(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        dask_predict(client, "digits_that_do_not_exist.npz", digit_arrays(4), topk=1)
    with pytest.raises(ValueError, match="2 labels for a 10-class head"):
        dask_predict(client, "digits", digit_arrays(4), topk=1, labels=["a", "b"])


def test_cli_scheduler_address_prints_what_the_local_run_prints(client, tmp_path):
    from npvit.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("digit_3.png", "digit_7.png"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "zz_broken.png").write_bytes(b"not an image")

    def cli(*extra):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(["predict", "digits", str(folder), "--topk", "2", "--batch-size", "1", *extra])
        return rc, out.getvalue(), err.getvalue()

    here = cli()
    there = cli("--scheduler", client.scheduler.address, "--progress")
    assert here[0] == there[0] == 1                      # the broken file makes the status 1
    assert there[1] == here[1] and here[1].count("\n") == 2
    assert "zz_broken.png" in there[2] and "3/3 images" in there[2]  # reported; the bar saw every batch


def test_cli_local_cluster(tmp_path):
    from npvit.cli import main

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        rc = main(["predict", "digits", str(DATA / "digit_3.png"), str(DATA / "digit_7.png"), "--topk", "1",
                   "--scheduler", "local:2"])
    assert rc == 0
    assert out.getvalue().splitlines() == [f"{DATA / 'digit_3.png'}: 3 (0.9412)",
                                           f"{DATA / 'digit_7.png'}: 7 (0.9280)"]


def test_a_worker_killed_mid_job_has_its_batches_run_again(client, digits):
    """Last in this file: it kills one of the module's two workers (its nanny starts a new one)."""
    arrays = digit_arrays(120, seed=2)
    victim = next(iter(client.run(os.getpid).values()))
    killed = []

    def progress(n):  # the first finished batch: the other batches are queued or running
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(n)

    # A result that lived on the dead worker is fetched from it until the connect timeout (30 s by
    # default: Dask retries a refused connection) before it is computed again: shorten the wait.
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        got = dask_predict(client, "digits", arrays, topk=3, batch_size=4, progress=progress)
    assert killed
    assert_same(got, digits.predict(arrays, topk=3))                   # complete and in order
