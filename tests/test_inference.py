"""The fused eval path (backend kernels, whole images per thread) against the op-by-op reference path,
and each fused kernel against its plain twin on the Backend base class."""
import contextlib
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import npvit
from conftest import randomize_params
from fused_check import assert_fused_matches_reference
from npvit.backends import Backend
from npvit.backends.parallel import RowPool


@st.composite
def configs(draw):
    heads = draw(st.integers(1, 4))
    distilled = draw(st.booleans())
    return dict(img_size=draw(st.sampled_from([8, 12, (8, 16)])), patch_size=4, embed_dim=heads * draw(st.integers(2, 8)),
                depth=draw(st.integers(1, 2)), num_heads=heads, num_classes=draw(st.integers(1, 4)),
                mlp_ratio=draw(st.sampled_from([2.0, 4.0, 40.0])),  # 40: hidden > one row block
                qkv_bias=draw(st.booleans()), distilled=distilled,
                classifier="token" if distilled else draw(st.sampled_from(["token", "gap"])),
                representation_size=None if distilled else draw(st.sampled_from([None, 3])),
                gelu=draw(st.sampled_from(["exact", "tanh"])), qk_scale=draw(st.sampled_from([None, 0.3])))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs(), batch=st.integers(1, 40), dtype=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2**31 - 1))
# Draws whose final LayerNorm magnifies rounding (rows whose values nearly agree): a direct float32
# comparison of the two paths failed the first two (features 3e-4 apart, logits 2.03e-6); the
# reference path's error alone as the scale failed the third (it landed 3.7e-8 from the truth).
@example(cfg=dict(img_size=(8, 16), patch_size=4, embed_dim=2, depth=2, num_heads=1, num_classes=1, mlp_ratio=40.0,
                  qkv_bias=True, distilled=True, classifier="token", representation_size=None, gelu="exact",
                  qk_scale=0.3), batch=1, dtype="float32", seed=2)
@example(cfg=dict(img_size=12, patch_size=4, embed_dim=4, depth=1, num_heads=2, num_classes=1, mlp_ratio=40.0,
                  qkv_bias=True, distilled=True, classifier="token", representation_size=None, gelu="exact",
                  qk_scale=0.3), batch=2, dtype="float32", seed=2)
@example(cfg=dict(img_size=12, patch_size=4, embed_dim=2, depth=2, num_heads=1, num_classes=1, mlp_ratio=4.0,
                  qkv_bias=False, distilled=False, classifier="token", representation_size=None, gelu="tanh",
                  qk_scale=0.3), batch=2, dtype="float32", seed=2)
def test_fast_path_equals_reference(backend, cfg, batch, dtype, seed):
    """Logits and forward_features of the fused path against the op-by-op reference path, in
    float64 and float32, whatever a draw's conditioning (fused_check.py)."""
    if backend.name != "numpy":
        pytest.skip("the fast path is the NumPy backend's")
    model = npvit.VisionTransformer(npvit.ViTConfig(**cfg), dtype=dtype, backend=backend, seed=seed)
    randomize_params(model, seed, scale=0.3)
    H, W = model.config.img_size
    assert_fused_matches_reference(model, np.random.default_rng(seed).standard_normal((batch, 3, H, W)))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("group_rows", [1, 30, 1 << 20])
def test_every_way_of_sharing_the_batch_gives_the_reference_features(monkeypatch, threads, group_rows):
    """Whole images per thread in groups of every size (one image per group, a few, all of them),
    plus the images left over for the row-split path, for batches that do and do not divide."""
    from npvit.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "GROUP_ROWS", group_rows)
    be = _numpy_backend(threads)
    cfg = npvit.ViTConfig(img_size=12, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3)
    model = npvit.VisionTransformer(cfg, dtype="float64", backend=be, seed=1)
    randomize_params(model, 1, scale=0.3)
    for batch in (1, 2, 3, 5, 7):
        x = model._check_input(np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)))
        model.fast_inference = False
        ref = model.forward_features(x)
        model.fast_inference = True
        fast = model.forward_features(x)
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
        # The class token alone (the last block skips the other rows' queries, projection and MLP)
        run = model._pass(train=False, grad=False)
        prefix = model._map_images(lambda images, r: model._features(images, r, prefix_only=True)[0], x, run)
        assert prefix.shape == (batch, 1, 8)
        np.testing.assert_allclose(prefix, ref[:, :1], rtol=1e-12, atol=1e-12)


# --- each fused kernel against its plain twin (Backend's xp version) ----------------------------
# float32: the same products and sums in another order (row blocks vs whole arrays) through
# LayerNorm, a product of up to 24 terms and GELU: a few ulp of the largest value; float64 the same
# at its own precision.  A wrong kernel (a missing bias, a head out of place) is off by O(1).
TOL = {"float32": 2e-5, "float64": 1e-12}


def _numpy_backend(threads):
    from npvit.backends.numpy_backend import NumpyBackend

    be = NumpyBackend()
    be.pool = RowPool(threads)
    return be


def _kernel_and_twin(be, name):
    """The backend's kernel ``name`` and the Backend base class's plain twin, run on ``be``."""
    return getattr(be, name), lambda *a, **k: getattr(Backend, name)(be, *a, **k)


@contextlib.contextmanager
def _sharing(share):
    """Products shared out by "rows" or by "columns" however few their rows, and handed to the pool
    however small (the hypothesis shapes are all below the size the pool would normally get)."""
    from npvit.backends import numpy_backend

    saved = numpy_backend.COLUMN_SPLIT_ROWS, numpy_backend.INLINE_BELOW
    numpy_backend.COLUMN_SPLIT_ROWS, numpy_backend.INLINE_BELOW = (0 if share == "rows" else 1 << 30), 0
    try:
        yield
    finally:
        numpy_backend.COLUMN_SPLIT_ROWS, numpy_backend.INLINE_BELOW = saved


def _serially(be, fn):
    """Run fn() as a thread that owns whole images does (kernels on the calling thread)."""
    return be.map_batch(lambda lo, hi: fn(), 1, 1)[0]


def _close(got, want, dtype):
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, np.abs(want).max()))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 300), D=st.integers(1, 24), width=st.integers(1, 40),
       act=st.sampled_from([None, "exact", "tanh"]), bias=st.sampled_from(["none", "full", "leading"]),
       threads=st.integers(1, 3), serial=st.booleans(), share=st.sampled_from(["rows", "columns"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**31 - 1))
def test_layernorm_linear_kernel_equals_its_twin(rows, D, width, act, bias, threads, serial, share, dtype, seed):
    rng = np.random.default_rng(seed)
    be = _numpy_backend(threads)
    kernel, twin = _kernel_and_twin(be, "layernorm_linear")
    x = (3 * rng.standard_normal((1, rows, D)) + 1).astype(dtype)
    nw, nb = (1 + rng.standard_normal(D)).astype(dtype), rng.standard_normal(D).astype(dtype)
    w = rng.standard_normal((width, D)).astype(dtype)
    b = {"none": None, "full": rng.standard_normal(width), "leading": rng.standard_normal(max(1, width // 3))}[bias]
    b = None if b is None else b.astype(dtype)
    normed, normed_twin = np.empty((rows, D), dtype), np.empty((rows, D), dtype)
    call = lambda: kernel(x, nw, nb, 1e-5, w, b, act=act, normed=normed)
    with _sharing(share):
        got = _serially(be, call) if serial else call()
    want = twin(x, nw, nb, 1e-5, w, b, act=act, normed=normed_twin)
    assert got.shape == want.shape == (1, rows, width)
    _close(got, want, dtype)
    _close(normed, normed_twin, dtype)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 300), D=st.integers(1, 24), width=st.integers(1, 40), bias=st.booleans(),
       threads=st.integers(1, 3), serial=st.booleans(), share=st.sampled_from(["rows", "columns"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**31 - 1))
def test_linear_residual_kernel_equals_its_twin(rows, D, width, bias, threads, serial, share, dtype, seed):
    rng = np.random.default_rng(seed)
    be = _numpy_backend(threads)
    kernel, twin = _kernel_and_twin(be, "linear_residual")
    x, h = rng.standard_normal((2, rows, D)).astype(dtype), rng.standard_normal((2, rows, width)).astype(dtype)
    w = rng.standard_normal((width, D)).astype(dtype)
    b = rng.standard_normal(width).astype(dtype) if bias else None
    got, want = h.copy(), h.copy()
    with _sharing(share):
        out = _serially(be, lambda: kernel(x, w, b, got)) if serial else kernel(x, w, b, got)
    assert out is got                                                # in place
    twin(x, w, b, want)
    _close(got, want, dtype)
    assert np.abs(got - h).max() > 0                                 # it did add something


@settings(max_examples=30, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), heads=st.integers(1, 4),
       dh=st.integers(1, 6), Nq=st.integers(1, 30), N=st.integers(1, 30),
       bias=st.sampled_from(["none", "heads", "lead0", "full"]), threads=st.integers(1, 3),
       serial=st.booleans(), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**31 - 1))
def test_attention_kernel_equals_its_twin(lead, heads, dh, Nq, N, bias, threads, serial, dtype, seed):
    """On views into qkv-like tensors (as the blocks pass them), with every kind of score bias;
    both against softmax attention written out in float64 too."""
    rng = np.random.default_rng(seed)
    be = _numpy_backend(threads)
    kernel, twin = _kernel_and_twin(be, "attention")
    D = heads * dh
    q = rng.standard_normal((*lead, Nq, 2 * D)).astype(dtype)[..., D:]        # strided views
    kv = rng.standard_normal((*lead, N, 2 * D)).astype(dtype)
    k, v = kv[..., :D], kv[..., D:]
    shape = {"none": None, "heads": (heads, Nq, N), "lead0": (lead[0],) + (1,) * len(lead[1:]) + (1, Nq, N),
             "full": (*lead, heads, Nq, N)}[bias]
    b = None if shape is None else (3 * rng.standard_normal(shape)).astype(dtype)
    call = lambda: kernel(q, k, v, heads, 0.4, b)
    got = _serially(be, call) if serial else call()
    want = twin(q, k, v, heads, 0.4, b)
    assert got.shape == want.shape == (*lead, Nq, D)
    _close(got, want, dtype)
    heads_of = lambda a: np.moveaxis(a.astype(np.float64).reshape(*a.shape[:-1], heads, dh), -2, -3)
    s = 0.4 * heads_of(q) @ np.swapaxes(heads_of(k), -1, -2) + (0 if b is None else b)
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = np.moveaxis((p / p.sum(-1, keepdims=True)) @ heads_of(v), -3, -2).reshape(*lead, Nq, D)
    _close(got, ref, dtype)


def test_row_pool_covers_every_row_once_and_reraises():
    pool = RowPool(3)
    seen = np.zeros(100, int)

    def mark(lo, hi):
        seen[lo:hi] += 1
    pool.run(mark, 100, min_rows=7)
    assert (seen == 1).all()
    assert pool.split(5, min_rows=10) == [(0, 5)]
    assert len(pool.split(100, min_rows=1)) == 3
    assert all(lo % 7 == 0 for lo, _ in pool.split(100, min_rows=7))  # block-aligned boundaries

    def boom(lo, hi):
        raise ValueError(f"rows {lo}:{hi}")
    with pytest.raises(ValueError, match="rows"):
        pool.run(boom, 10)
    assert pool.run(lambda lo, hi: (lo, hi), 3) == [(0, 1), (1, 2), (2, 3)]   # workers still serve


def test_row_pool_hands_slices_to_workers_and_never_deadlocks():
    pool = RowPool(2)
    me = threading.get_ident()
    who = pool.run(lambda lo, hi: threading.get_ident(), 2)
    assert who[0] == me and who[1] != me            # the caller takes the first slice, a worker the rest

    # a slice that calls back into the pool runs those slices itself
    assert pool.run(lambda lo, hi: pool.run(lambda a, b: (a, b), 4), 2) == [[(0, 2), (2, 4)]] * 2

    # two threads running at once both get every slice done, in order
    results, barrier = {}, threading.Barrier(2)

    def caller(name):
        barrier.wait()
        results[name] = [pool.run(lambda lo, hi: list(range(lo, hi)), 10) for _ in range(200)]
    callers = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert all(r == [list(range(5)), list(range(5, 10))] for i in range(2) for r in results[i])

    # a forked child has none of the parent's threads: the pool starts its own (Python 3.12+ warns
    # that forking a multi-threaded process is risky: that is the case under test)
    if hasattr(os, "fork"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            ok = pool.run(lambda lo, hi: threading.get_ident(), 2)[1] != threading.get_ident()
            os._exit(0 if ok else 1)
        for _ in range(300):                        # a child waiting on a thread it lacks would hang
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's pool.run hung")
        assert status == 0


def test_rowwise_gradients_are_bit_identical_for_any_thread_count():
    """LayerNorm's parameter gradients are sums over row blocks: the result must not depend on how
    many threads ran them or in which order they finished (resume-equivalence relies on it)."""
    from npvit.backends.blocking import INLINE_BELOW
    from npvit.backends.numpy_backend import NumpyBackend
    from npvit.ops.layernorm import layernorm_backward, layernorm_forward

    rng = np.random.default_rng(0)
    # big enough to go through the pool (small arrays stay on the calling thread)
    x, dy = rng.standard_normal((3000, 64)).astype(np.float32), rng.standard_normal((3000, 64)).astype(np.float32)
    w, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    assert x.size >= INLINE_BELOW
    results = []
    for threads in (1, 2, 3, 2):
        be = NumpyBackend()
        be.pool = RowPool(threads)
        _, cache = layernorm_forward(x, w, b, 1e-6, be)
        results.append(layernorm_backward(dy, cache))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


def test_fused_float32_gelu_kernels_against_the_plain_twins():
    """The NumPy backend's fused float32 GELU (value and derivative) against the Backend base class's
    plain version and float64 math: both stay within 1e-6 of exact (A&S 7.1.26 is 1.5e-7 on erf)."""
    import math

    from npvit.backends import Backend, get_backend

    be = get_backend("numpy")
    x = np.linspace(-10, 10, 40001).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x64])
    exact_deriv = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                            for v in x64])
    for gelu in (be.gelu_exact, lambda *a: Backend.gelu_exact(be, *a)):  # fused, then the plain twin
        out, deriv = np.empty_like(x), np.empty_like(x)
        gelu(x, out, deriv)
        np.testing.assert_allclose(out, exact, atol=1e-6)
        np.testing.assert_allclose(deriv, exact_deriv, atol=1e-6)
        in_place = x.copy()
        gelu(in_place, in_place)                                     # out may be x
        np.testing.assert_array_equal(in_place, out)
    # a wrong kernel (erf's sign dropped for negative x) would be off by O(1): the bound means something
    assert np.abs(np.maximum(x, 0) - exact).max() > 0.1
