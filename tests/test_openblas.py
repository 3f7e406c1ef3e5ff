"""Control of NumPy's OpenBLAS (npvit/backends/openblas.py)."""
import os
import subprocess
import sys

import pytest

from npvit.backends.openblas import OpenBlas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_openblas = pytest.mark.skipif(not OpenBlas().available, reason="NumPy here does not use OpenBLAS")


@needs_openblas
def test_thread_limit_is_restored_and_nests():
    blas = OpenBlas()
    before = blas.num_threads()
    with blas.limit(1):
        assert blas.num_threads() == 1
        with blas.limit(4):  # nested: never above the outer cap
            assert blas.num_threads() == 1
    assert blas.num_threads() == before


@needs_openblas
def test_corename_reports_the_kernel_family_openblas_runs():
    """OPENBLAS_CORETYPE forces a family at load time: corename must report that one (and npvit's
    backend must leave it alone)."""
    for family in ("Haswell", "Sandybridge"):
        code = "import npvit; print(npvit.get_backend('numpy').blas.corename)"
        env = dict(os.environ, OPENBLAS_CORETYPE=family, PYTHONPATH=ROOT)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split()[-1] == family
