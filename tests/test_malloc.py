"""npvit/backends/malloc.py: freed activation memory is reused without page faults, and a user's
own malloc settings are left alone."""
import os
import subprocess
import sys

import pytest

from npvit.backends.malloc import user_tuned_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocate and free 20 arrays of 4 MiB twice; print the page faults of the second round.  With
# glibc's defaults the heap's free top goes back to the system after the first round, so the
# second touches fresh pages (~1000 faults per array).
PROBE = """
import resource, numpy as np, npvit
print(npvit.get_backend("numpy").prepare_memory())
def churn():
    arrays = [np.ones(1 << 20, np.float32) for _ in range(20)]
    del arrays
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    in_force, faults = out.stdout.split()[-2:]
    return in_force == "True", int(faults)


def test_user_settings_are_recognised():
    assert user_tuned_malloc({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not user_tuned_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert not user_tuned_malloc({"MALLOC_ARENA": "x", "PATH": "/bin"})  # no trailing underscore


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_freed_memory_is_reused_without_page_faults():
    in_force, faults = _probe()
    if not in_force:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert faults < 500, faults                       # 20 x 4 MiB reused: nothing new to map


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_a_users_malloc_settings_are_kept():
    in_force, faults = _probe(MALLOC_TRIM_THRESHOLD_="131072")  # glibc's default, set explicitly
    assert not in_force
    assert faults > 5000, faults                      # the default behaviour: fresh pages again
