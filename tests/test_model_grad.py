"""The whole model's backward against finite differences, in float64, over hypothesis-drawn configs.

Every parameter and the input are perturbed together along one random direction; the upstream
gradient is random.  Dropout, attention dropout and drop path are on, with the masks replayed from
a fixed seed in every forward, so the function being differentiated is deterministic.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvit
from conftest import randomize_params
from gradcheck import directional_check, model_gradcheck


@st.composite
def small_configs(draw):
    heads = draw(st.integers(1, 3))
    ph, pw = draw(st.integers(2, 4)), draw(st.integers(2, 4))
    distilled = draw(st.booleans())
    classifier = "token" if distilled else draw(st.sampled_from(["token", "gap"]))
    return dict(
        img_size=(ph * draw(st.integers(1, 3)), pw * draw(st.integers(1, 3))),
        patch_size=(ph, pw), in_c=draw(st.integers(1, 3)),
        num_classes=draw(st.integers(1, 5)) if distilled else draw(st.integers(0, 5)),
        # At least 4 features per LayerNorm row: with 2, a row whose two values nearly agree sits
        # where LayerNorm's curvature is huge and the central difference's O(eps^2) error alone
        # exceeds the tolerance (seen: 6e-6 relative at eps 1e-6, shrinking 100x per 10x in eps).
        embed_dim=heads * draw(st.integers(-(-4 // heads), 5)), depth=draw(st.integers(1, 2)), num_heads=heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 1.5])), qkv_bias=draw(st.booleans()),
        qk_scale=draw(st.sampled_from([None, 0.7])),
        representation_size=None if distilled else draw(st.sampled_from([None, 5])),
        distilled=distilled, classifier=classifier,
        drop_ratio=draw(st.sampled_from([0.0, 0.2])), attn_drop_ratio=draw(st.sampled_from([0.0, 0.2])),
        drop_path_ratio=draw(st.sampled_from([0.0, 0.3])),
        gelu=draw(st.sampled_from(["exact", "tanh"])), norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
    )


@settings(max_examples=12, deadline=None)
@given(cfg=small_configs(), train=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_whole_model_gradient(backend, cfg, train, seed):
    model = npvit.VisionTransformer(npvit.ViTConfig(**cfg), dtype="float64", backend=backend, seed=seed)
    randomize_params(model, seed)
    x = np.random.default_rng(seed + 1).standard_normal((2, cfg["in_c"], *cfg["img_size"]))
    model_gradcheck(model, x, train, seed)


def test_every_parameter_gets_a_gradient_that_matters(backend):
    """Each named gradient is checked on its own: perturbing only that parameter (a check over
    all parameters at once could hide one wrong gradient behind the others)."""
    cfg = npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=6, depth=2, num_heads=2, num_classes=3,
                          representation_size=4, drop_ratio=0.1, drop_path_ratio=0.2)
    model = npvit.VisionTransformer(cfg, dtype="float64", backend=backend, seed=3)
    randomize_params(model, 3)
    be, rng = backend, np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 8))
    out = model.forward(be.from_numpy(x), train=True, grad=True, rng=11)
    dy = rng.standard_normal(tuple(out.shape))
    _, grads = model.backward(be.from_numpy(dy))
    assert list(grads) == list(model.state_dict())
    for name, g in grads.items():
        base = be.to_numpy(model.params[name]).copy()

        def f(p):
            model.load_state_dict({name: p}, strict=False)
            return be.to_numpy(model.forward(be.from_numpy(x), train=True, rng=11))

        try:
            directional_check(f, [base], [be.to_numpy(g)], dy, seed=len(name))
        finally:
            model.load_state_dict({name: base}, strict=False)


def test_model_gradcheck_catches_a_broken_backward(backend, monkeypatch):
    """Negative control at model level: a GELU backward whose derivative is 1% off must be caught."""
    from npvit.ops import sublayer

    def wrong_gelu_backward(dy, cache):
        return dy * cache.deriv * 1.01

    monkeypatch.setattr(sublayer, "gelu_backward", wrong_gelu_backward)
    cfg = npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=4, depth=1, num_heads=2, num_classes=3)
    model = npvit.VisionTransformer(cfg, dtype="float64", backend=backend, seed=0)
    randomize_params(model, 0, scale=1.0)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    with pytest.raises(AssertionError, match="gradient check failed"):
        model_gradcheck(model, x, train=False, seed=0)
