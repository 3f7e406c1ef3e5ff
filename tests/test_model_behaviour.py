"""Invariants of the model and its public API, and the errors bad input gets."""
import numpy as np
import pytest

import npvit
from conftest import randomize_params
from npvit.model.schema import parameter_shapes

TINY = dict(img_size=16, patch_size=4, embed_dim=12, depth=2, num_heads=3, num_classes=5)


@pytest.fixture
def tiny(backend):
    model = npvit.VisionTransformer(npvit.ViTConfig(**TINY), backend=backend, seed=0)
    randomize_params(model, 0)
    return model


def images(backend, n=3, c=3, hw=(16, 16), seed=0, dtype=np.float32):
    return backend.from_numpy(np.random.default_rng(seed).standard_normal((n, c, *hw)).astype(dtype))


# --- variants and parameters ---------------------------------------------------------------
EXPECTED_PARAMS = {  # timm's counts (model.num_params() of timm.create_model(name))
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224_in21k": 103_186_515,
    "vit_huge_patch14_224_in21k": 660_385_363,
    "deit_base_distilled_patch16_224": 87_338_192,
    "deit_tiny_distilled_patch16_224": 5_910_800,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_variant_parameter_counts(name):
    cfg = npvit.model.variants.variant_config(name)
    assert sum(int(np.prod(s)) for s in parameter_shapes(cfg).values()) == EXPECTED_PARAMS[name]


def test_every_variant_builds_and_runs_tiny(backend):
    for name in npvit.list_models():
        small = dict(depths=(1,) * 4) if name.startswith("swin") else dict(depth=1)
        m = npvit.create_model(name, backend=backend, img_size=32 if "14" not in name else 28, **small)
        out = m.forward(images(backend, 1, hw=m.config.img_size))
        assert tuple(out.shape) == (1, m.config.num_classes)


def test_init_is_reproducible_from_seed_and_follows_the_seed_recipe(backend):
    a = npvit.create_model("vit_tiny_patch16_224", backend=backend, seed=7, depth=2)
    b = npvit.create_model("vit_tiny_patch16_224", backend=backend, seed=7, depth=2)
    c = npvit.create_model("vit_tiny_patch16_224", backend=backend, seed=8, depth=2)
    host = backend.to_numpy
    for n in a.params:
        np.testing.assert_array_equal(host(a.params[n]), host(b.params[n]))
    assert not np.array_equal(host(a.params["pos_embed"]), host(c.params["pos_embed"]))
    p = {n: host(v).astype(np.float64) for n, v in a.params.items()}
    assert abs(p["pos_embed"].std() - 0.02) < 0.002 and abs(p["cls_token"].std() - 0.02) < 0.01
    assert abs(p["blocks.0.attn.qkv.weight"].std() - 0.01) < 0.001
    np.testing.assert_array_equal(p["blocks.0.norm1.weight"], 1.0)
    np.testing.assert_array_equal(p["blocks.0.mlp.fc1.bias"], 0.0)
    fan_out = 192 * 16 * 16  # Kaiming normal, fan-out mode
    assert abs(p["patch_embed.proj.weight"].std() - np.sqrt(2 / fan_out)) < 0.002


@pytest.mark.parametrize("chunk", [1, 7, 1 << 30])
def test_init_draws_do_not_depend_on_the_slice_size_or_dtype(monkeypatch, chunk):
    """Weights are drawn a slice at a time (no float64 copy of a big weight in a float32 build): the
    values must be those of one whole float64 draw, out-of-range redraws included (std 1 with
    bounds +-2 redraws ~5% of the entries), rounded to the model's dtype."""
    from npvit.model import init

    def whole_draw(rng, shape, std, lo=-2.0, hi=2.0):
        out = rng.normal(0.0, std, size=shape)
        bad = (out < lo) | (out > hi)
        while bad.any():
            out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
            bad = (out < lo) | (out > hi)
        return out

    monkeypatch.setattr(init, "_DRAW_CHUNK", chunk)
    for shape in ((50, 41), (3,), (0, 2)):
        want = whole_draw(np.random.default_rng(4), shape, 1.0)
        np.testing.assert_array_equal(init.trunc_normal(np.random.default_rng(4), shape, 1.0), want)
        got32 = init.trunc_normal(np.random.default_rng(4), shape, 1.0, dtype=np.float32)
        assert got32.dtype == np.float32
        np.testing.assert_array_equal(got32, want.astype(np.float32))
    shapes = {"patch_embed.proj.weight": (4, 3, 2, 2), "blocks.0.mlp.fc1.weight": (6, 5), "pos_embed": (1, 3, 4)}
    a = dict(init.init_params(shapes, 3, np.float32))
    monkeypatch.setattr(init, "_DRAW_CHUNK", 1 << 30)
    b = dict(init.init_params(shapes, 3))
    for name in shapes:
        np.testing.assert_array_equal(a[name], b[name].astype(np.float32))


def test_state_dict_round_trip_and_strict_errors(tiny, backend):
    sd = {n: backend.to_numpy(v) for n, v in tiny.state_dict().items()}
    other = npvit.VisionTransformer(npvit.ViTConfig(**TINY), backend=backend, seed=1)
    other.load_state_dict(sd)
    x = images(backend)
    np.testing.assert_array_equal(backend.to_numpy(other.forward(x)), backend.to_numpy(tiny.forward(x)))
    bad = dict(sd)
    del bad["head.bias"]
    bad["extra.weight"] = np.zeros(3)
    bad["blocks.0.attn.qkv.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError) as err:
        other.load_state_dict(bad)
    msg = str(err.value)
    assert "missing head.bias" in msg and "unexpected extra.weight" in msg
    assert "blocks.0.attn.qkv.weight: expected (36, 12), got (5, 5)" in msg
    # nothing was half-loaded by the failed call
    np.testing.assert_array_equal(backend.to_numpy(other.forward(x)), backend.to_numpy(tiny.forward(x)))
    missing, unexpected = other.load_state_dict({"head.bias": sd["head.bias"], "zzz": np.zeros(1)}, strict=False)
    assert "head.weight" in missing and unexpected == ["zzz"]


# --- invariants --------------------------------------------------------------------------
def test_batch_equals_samples_one_by_one(tiny, backend):
    x = images(backend, 4, dtype=np.float32)
    whole = backend.to_numpy(tiny.forward(x))
    for i in range(4):
        one = backend.to_numpy(tiny.forward(x[i:i + 1]))
        # float32 BLAS may block a batch differently from one row: a few ulp of the logits.
        np.testing.assert_allclose(one[0], whole[i], rtol=1e-5, atol=1e-5)


def test_eval_is_deterministic_and_train_dropout_reproducible(backend):
    cfg = npvit.ViTConfig(**TINY, drop_ratio=0.3, attn_drop_ratio=0.3, drop_path_ratio=0.3)
    model = npvit.VisionTransformer(cfg, backend=backend, seed=0)
    x, host = images(backend), backend.to_numpy
    np.testing.assert_array_equal(host(model.forward(x)), host(model.forward(x)))
    a, b = host(model.forward(x, train=True, rng=5)), host(model.forward(x, train=True, rng=5))
    np.testing.assert_array_equal(a, b)
    c = host(model.forward(x, train=True, rng=6))
    assert not np.allclose(a, c)
    assert not np.allclose(a, host(model.forward(x)))


def test_distilled_returns_both_heads_in_training_and_their_mean_in_eval(backend):
    model = npvit.VisionTransformer(npvit.ViTConfig(**TINY, distilled=True), backend=backend, seed=0)
    randomize_params(model, 1)
    x, host = images(backend), backend.to_numpy
    cls_logits, dist_logits = model.forward(x, train=True)
    # eval takes the fast path, training the reference ops: equal to float32 rounding
    np.testing.assert_allclose(host(model.forward(x)), (host(cls_logits) + host(dist_logits)) / 2, rtol=1e-6, atol=1e-6)
    assert not np.allclose(host(cls_logits), host(dist_logits))


def test_features_and_gap(backend):
    feats = npvit.VisionTransformer(npvit.ViTConfig(**dict(TINY, num_classes=0)), backend=backend)
    assert tuple(feats.forward(images(backend)).shape) == (3, 12)
    gap = npvit.VisionTransformer(npvit.ViTConfig(**dict(TINY, classifier="gap")), backend=backend)
    assert "cls_token" not in gap.params and tuple(gap.params["pos_embed"].shape) == (1, 16, 12)
    tokens = gap.forward_features(images(backend))
    assert tuple(tokens.shape) == (3, 16, 12)


def test_non_square_images_and_patches(backend):
    model = npvit.VisionTransformer(npvit.ViTConfig(**dict(TINY, img_size=(8, 20), patch_size=(4, 5))),
                                    backend=backend)
    assert model.config.num_patches == 8
    assert tuple(model.forward(images(backend, hw=(8, 20))).shape) == (3, 5)


def test_move_between_dtypes_keeps_results(tiny, backend):
    x, host = images(backend, dtype=np.float64), backend.to_numpy
    y32 = host(tiny.forward(x))
    tiny.to(dtype="float64")
    assert tiny.dtype == "float64" and host(tiny.params["head.weight"]).dtype == np.float64
    np.testing.assert_allclose(host(tiny.forward(x)), y32, rtol=1e-4, atol=1e-5)


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,match", [
    ((3, 16, 16), r"expected images of shape \(B, C, H, W\).*x\[None\]"),
    ((2, 1, 16, 16), "expected 3 channels, got 1"),
    ((2, 16, 16, 3), "channels last"),
    ((2, 3, 32, 32), "expected 16x16 images, got 32x32.*img_size"),
])
def test_bad_input_shapes(tiny, backend, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny.forward(backend.from_numpy(np.zeros(shape, np.float32)))


def test_bad_input_dtype_values_and_types(tiny, backend):
    with pytest.raises(TypeError, match="floating-point.*predict"):
        tiny.forward(backend.from_numpy(np.zeros((1, 3, 16, 16), np.uint8)))
    x = np.zeros((1, 3, 16, 16), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        tiny.forward(backend.from_numpy(x))
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        tiny.forward(backend.from_numpy(x))
    with pytest.raises(TypeError, match="array of images"):
        tiny.forward([[1.0]])


def test_backward_needs_a_forward_with_grad(tiny, backend):
    with pytest.raises(RuntimeError, match=r"forward\(x, grad=True\) first"):
        tiny.backward(backend.from_numpy(np.zeros((3, 5), np.float32)))
    tiny.forward(images(backend))  # grad=False keeps nothing
    with pytest.raises(RuntimeError, match="grad=True"):
        tiny.backward(backend.from_numpy(np.zeros((3, 5), np.float32)))
    tiny.forward(images(backend), grad=True)
    tiny.backward(backend.from_numpy(np.ones((3, 5), np.float32)))
    with pytest.raises(RuntimeError, match="grad=True"):  # one backward per forward
        tiny.backward(backend.from_numpy(np.ones((3, 5), np.float32)))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="must divide img_size"):
        npvit.ViTConfig(img_size=30, patch_size=16)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        npvit.ViTConfig(embed_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="gelu must be one of"):
        npvit.ViTConfig(gelu="relu")
    with pytest.raises(TypeError, match="unknown model setting"):
        npvit.create_model("vit_tiny_patch16_224", num_head=3)
    with pytest.raises(ValueError, match="unknown model 'vit_gigantic'"):
        npvit.create_model("vit_gigantic")
    with pytest.raises(ValueError, match="dtype must be one of"):
        npvit.create_model("vit_tiny_patch16_224", dtype="int8")
    with pytest.raises(ValueError, match="unknown backend"):
        npvit.create_model("vit_tiny_patch16_224", backend="jax")


def test_wrong_device_array_is_an_error_not_a_copy(backend):
    class FakeCupyArray:  # a type whose module says cupy, as a real CuPy array's does
        __module__ = "cupy._core.core"
        shape = (1, 3, 16, 16)

    FakeCupyArray.__module__ = "cupy._core.core"
    if backend.name == "numpy":
        model = npvit.VisionTransformer(npvit.ViTConfig(**TINY), backend=backend)
        with pytest.raises(TypeError, match=r"CuPy \(GPU\) array.*x.get\(\)"):
            model.forward(FakeCupyArray())
    else:
        model = npvit.VisionTransformer(npvit.ViTConfig(**TINY), backend=backend)
        with pytest.raises(TypeError, match="NumPy \\(host\\) array.*cupy.asarray"):
            model.forward(np.zeros((1, 3, 16, 16), np.float32))


def test_backward_without_input_grad_gives_the_same_parameter_gradients(tiny, backend):
    """input_grad=False skips only dx; the residual adds run in place, so check the caller's
    images and a repeated forward are untouched too."""
    x = images(backend)
    x_before = backend.to_numpy(x).copy()
    dlogits = backend.from_numpy(np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32))
    runs = []
    for input_grad in (True, False):
        logits = tiny.forward(x, grad=True)
        dx, grads = tiny.backward(dlogits, input_grad=input_grad)
        runs.append((backend.to_numpy(logits), dx, {n: backend.to_numpy(g) for n, g in grads.items()}))
    assert runs[0][1] is not None and runs[1][1] is None
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for name, g in runs[0][2].items():
        np.testing.assert_array_equal(g, runs[1][2][name], err_msg=name)
    np.testing.assert_array_equal(backend.to_numpy(x), x_before)
