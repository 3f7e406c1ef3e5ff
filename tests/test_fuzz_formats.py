"""Random mutations of every checkpoint format npvit reads (``tools/fuzz_formats.py``): the only
allowed outcomes are a clean load or a ``CheckpointError``.

Mutants are loaded in a worker process, so the bounds are real: a load running past TIMEOUT
seconds gets the worker killed and is reported as a hang, and one whose peak resident memory grows
by more than MEMORY_MIB over what the worker held before the load is reported too (the seeds are ~100 KB models
that load in a few MiB; a member or header claiming gigabytes is what this catches).  Seeded, so a
failure replays: ``python tools/fuzz_formats.py --seed SEED --count COUNT --keep DIR``.  Longer runs:
the same tool with a larger ``--count`` (NPVIT_FUZZ_COUNT / NPVIT_FUZZ_SEED change this test's).
"""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = int(os.environ.get("NPVIT_FUZZ_COUNT", "360"))     # 24 mutants per seed file with torch (15)
SEED = int(os.environ.get("NPVIT_FUZZ_SEED", "15"))
TIMEOUT = 5.0
MEMORY_MIB = 256


@pytest.fixture(scope="module")
def fuzz():
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("the fuzz harness measures memory through Linux's /proc/self/clear_refs")
    spec = importlib.util.spec_from_file_location("fuzz_formats", os.path.join(ROOT, "tools", "fuzz_formats.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutants_of_every_format_load_or_raise_checkpoint_error(fuzz):
    found = []
    s = fuzz.run(COUNT, SEED, TIMEOUT, MEMORY_MIB, log=found.append)
    assert not s["findings"], (f"{len(s['findings'])} of {COUNT} mutants (seed {SEED}) ended otherwise:\n"
                               + "\n".join(found[:20]))
    # the mutants reached the readers: most are refused, some still load (a flipped weight byte)
    assert s["outcomes"]["CheckpointError"] > COUNT // 2 and s["outcomes"]["ok"] > 0, s["outcomes"]
    assert len(s["seeds"]) >= 10, s["seeds"]


@pytest.mark.parametrize("order", sorted(["escape", "hang", "memory", "crash"]))
def test_harness_reports_escapes_hangs_memory_and_crashes(fuzz, order):
    """Negative controls: the worker obeys four self-test paths; a harness blind to these would
    pass anything."""
    worker = fuzz.Worker(preload_torch=False)
    try:
        outcome, seconds, grew = worker.load(f":{order}:", {}, timeout=3.0)
        if order == "escape":
            assert outcome == "builtins.KeyError: 'not a CheckpointError'"
        elif order == "hang":
            assert outcome == "hang" and seconds >= 3.0
        elif order == "memory":
            assert outcome == "ok" and grew > MEMORY_MIB << 20, grew
        else:
            assert outcome == "worker died (exit status 3)"
        # the harness goes on after each of them
        assert worker.load(":none:", {}, timeout=30.0)[0].startswith(
            "builtins.FileNotFoundError: no such checkpoint file or folder: ':none:'")
    finally:
        worker.close()
