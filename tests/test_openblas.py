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


@needs_openblas
def test_forward_and_backward_keep_openblas_at_one_thread(monkeypatch):
    """A product small enough to run inline (the head) would otherwise wake OpenBLAS's own threads,
    which then spin on the cores npvit's pool needs; the caller's setting comes back afterwards."""
    import numpy as np

    import npvit
    from npvit.model import vit

    model = npvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, depth=1, num_classes=3)
    blas = model.backend.blas
    if blas.num_threads() < 2:
        pytest.skip("OpenBLAS runs one thread here: nothing to hold down")
    before, seen = blas.num_threads(), []

    def spy(original):
        def call(*args, **kwargs):
            seen.append(blas.num_threads())
            return original(*args, **kwargs)
        return call
    monkeypatch.setattr(vit, "linear_forward", spy(vit.linear_forward))
    monkeypatch.setattr(vit, "linear_backward", spy(vit.linear_backward))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model.forward(x)                                                  # eval: the fused path
    out = model.forward(x, train=True, grad=True)
    model.backward(np.ones_like(out))
    assert len(seen) == 3 and set(seen) == {1}
    assert blas.num_threads() == before
