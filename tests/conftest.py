"""Shared fixtures: ``--backend numpy|cupy`` runs the suite on either backend."""
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--backend", default="numpy", choices=("numpy", "cupy"),
                     help="array backend the tests run on (cupy needs a CUDA GPU)")


@pytest.fixture(scope="session")
def backend(request):
    """The backend under test; on a machine without a GPU, CuPy runs are skipped with the reason."""
    name = request.config.getoption("--backend")
    if name == "cupy":
        from npvit.backends.cupy_backend import cupy_unavailable_reason

        reason = cupy_unavailable_reason()
        if reason:
            pytest.skip(f"--backend cupy: {reason}")
    from npvit import get_backend

    return get_backend(name)


@pytest.fixture
def to_host(backend):
    return backend.to_numpy


def randomize_params(model, seed=0, scale=0.2):
    """Give every parameter random values (biases and LayerNorm affine too: ones/zeros hide bugs)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, value in model.state_dict().items():
        shape = tuple(value.shape)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            sd[name] = 1.0 + scale * rng.standard_normal(shape)
        else:
            sd[name] = scale * rng.standard_normal(shape)
    model.load_state_dict(sd)
    return sd
