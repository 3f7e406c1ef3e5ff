"""The backend boundary: where numpy/cupy/torch may be imported, erf accuracy, CuPy vs NumPy."""
import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import npvit
from npvit.backends.cupy_backend import cupy_unavailable_reason
from npvit.backends.numpy_backend import erf_float32, erf_float64

PKG = pathlib.Path(npvit.__file__).parent


def module_level_imports(path):
    """Top-level module names imported anywhere in a file, and those imported at module level."""
    tree = ast.parse(path.read_text())
    anywhere, top = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        anywhere.update(names)
        if node in tree.body:
            top.update(names)
    return anywhere, top


def test_ops_import_no_array_library():
    for path in sorted((PKG / "ops").glob("*.py")):
        anywhere, _ = module_level_imports(path)
        assert not anywhere & {"numpy", "cupy", "cupyx"}, f"{path.name} imports an array library: use backend.xp"


def test_cupy_is_imported_only_in_its_backend_and_torch_never_at_module_level():
    for path in sorted(PKG.rglob("*.py")):
        anywhere, top = module_level_imports(path)
        if path.name != "cupy_backend.py":
            assert not anywhere & {"cupy", "cupyx"}, f"{path} imports cupy"
        assert not top & {"torch", "timm", "transformers", "torchvision", "scipy"}, \
            f"{path} imports a test-only library at module level"


def test_import_npvit_needs_only_numpy():
    """Nor does it load what only some users need (readers, preprocessing, explanations)."""
    code = ("import sys, npvit; bad = [m for m in ('torch', 'scipy', 'cupy', 'PIL', 'npvit.formats', "
            "'npvit.preprocess', 'npvit.explain', 'npvit.distributed') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent)
    assert out.stdout.strip() == "", f"import npvit pulled in {out.stdout.strip()}"


def test_erf_accuracy():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 3.0, np.nextafter(3.0, 4), 40.0, -np.inf, np.inf]])
    ref = np.array([math.erf(v) for v in x])
    # float64: a few ulp, the accuracy the float64 gradient checks and parity tests rely on
    np.testing.assert_allclose(erf_float64(x), ref, rtol=4e-15, atol=2e-15)
    # float32: A&S 7.1.26 (1.5e-7) plus float32 rounding of the arithmetic
    e32 = erf_float32(x.astype(np.float32))
    assert e32.dtype == np.float32
    np.testing.assert_allclose(e32, ref, atol=6e-7)
    assert np.isnan(erf_float64(np.array([np.nan]))).all()


def test_cupy_request_without_gpu_is_a_clear_error():
    reason = cupy_unavailable_reason()
    if reason is None:
        pytest.skip("a GPU is present: the error path cannot be shown here")
    with pytest.raises(RuntimeError, match="cupy backend is not available"):
        npvit.create_model("vit_tiny_patch16_224", backend="cupy")
    assert "cupy" not in npvit.available_backends()


@pytest.mark.skipif(cupy_unavailable_reason() is not None,
                    reason=f"CuPy vs NumPy needs a GPU: {cupy_unavailable_reason()}")
def test_cupy_matches_numpy_forward_and_backward():
    """Same weights on both backends: logits and every gradient agree (float64: 1e-10 relative)."""
    cpu = npvit.create_model("vit_tiny_patch16_224", dtype="float64", depth=2, img_size=32, num_classes=7, seed=1)
    gpu = npvit.create_model("vit_tiny_patch16_224", dtype="float64", depth=2, img_size=32, num_classes=7,
                             seed=1, backend="cupy")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    dy = np.random.default_rng(1).standard_normal((2, 7))
    a = cpu.forward(x, grad=True)
    b = gpu.forward(gpu.backend.from_numpy(x), grad=True)
    np.testing.assert_allclose(gpu.backend.to_numpy(b), a, rtol=1e-10, atol=1e-12)
    dxa, ga = cpu.backward(dy)
    dxb, gb = gpu.backward(gpu.backend.from_numpy(dy))
    np.testing.assert_allclose(gpu.backend.to_numpy(dxb), dxa, rtol=1e-9, atol=1e-12)
    for n in ga:
        np.testing.assert_allclose(gpu.backend.to_numpy(gb[n]), ga[n], rtol=1e-9, atol=1e-12, err_msg=n)
    # moving a model between backends keeps its weights
    moved = cpu.to("cupy")
    np.testing.assert_allclose(moved.backend.to_numpy(moved.forward(moved.backend.from_numpy(x))), a, rtol=1e-12)
