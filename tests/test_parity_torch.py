"""npvit against independent PyTorch implementations carrying the same (randomised) weights:
timm's VisionTransformer and VisionTransformerDistilled, and Hugging Face's ViT.

Logits are compared in float32 and float64; in float64 every parameter gradient and the input
gradient are compared with torch autograd.  Tolerances:
* float64: 1e-10 relative to the largest value of each array.  Both sides compute the same math in a
  different order; float64 rounding leaves ~1e-14 per op, so 1e-10 is loose enough for depth and
  tight enough that any wrong term (an O(1) relative error) fails.
* float32: 2e-5 relative to the largest logit: summation-order differences in float32 GEMMs
  (eps 6e-8) accumulated over a few layers.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npvit
from conftest import randomize_params

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
from parity import float32_logits_match, run_parity  # noqa: E402
from torch_refs import hf_grads, hf_model, timm_grads, timm_model  # noqa: E402


@st.composite
def timm_configs(draw):
    heads = draw(st.integers(1, 3))
    p = draw(st.sampled_from([(4, 4), (2, 4), (4, 2)]))
    distilled = draw(st.booleans())
    return dict(
        img_size=(p[0] * draw(st.integers(1, 3)), p[1] * draw(st.integers(1, 3))), patch_size=p,
        in_c=draw(st.sampled_from([1, 3])), num_classes=draw(st.integers(1, 6)) if distilled else draw(st.integers(0, 6)),
        embed_dim=heads * draw(st.integers(3, 5)), depth=draw(st.integers(1, 3)), num_heads=heads,
        mlp_ratio=draw(st.sampled_from([2.0, 4.0])), qkv_bias=draw(st.booleans()), distilled=distilled,
        classifier="token" if distilled else draw(st.sampled_from(["token", "gap"])),
        gelu=draw(st.sampled_from(["exact", "tanh"])), norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=timm_configs(), train=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_timm_parity_small_configs(backend, cfg, train, seed):
    npv = npvit.VisionTransformer(npvit.ViTConfig(**cfg), dtype="float64", backend=backend, seed=seed)
    randomize_params(npv, seed, scale=0.5)
    x = np.random.default_rng(seed).standard_normal((2, cfg["in_c"], *cfg["img_size"]))
    run_parity(npv, timm_model(npv), timm_grads, x, train=train, seed=seed)
    float32_logits_match(npv, timm_model, x)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(heads=st.integers(1, 3), width=st.integers(3, 5), depth=st.integers(1, 2), rep=st.sampled_from([None, 6]),
       gelu=st.sampled_from(["exact", "tanh"]), eps=st.sampled_from([1e-12, 1e-6]), seed=st.integers(0, 2**31 - 1))
def test_huggingface_parity(backend, heads, width, depth, rep, gelu, eps, seed):
    cfg = npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=heads * width, depth=depth, num_heads=heads,
                          num_classes=5, representation_size=rep, gelu=gelu, norm_eps=eps)
    npv = npvit.VisionTransformer(cfg, dtype="float64", backend=backend, seed=seed)
    randomize_params(npv, seed, scale=0.5)
    x = np.random.default_rng(seed).standard_normal((2, 3, 8, 8))
    run_parity(npv, hf_model(npv), lambda ref: hf_grads(ref, npv), x, seed=seed)
    float32_logits_match(npv, hf_model, x)


def test_full_size_b16_against_timm(backend):
    """ViT-B/16 at 224: float32 logits, and every gradient in float64, against timm."""
    npv = npvit.create_model("vit_base_patch16_224", dtype="float64", backend=backend, seed=0)
    randomize_params(npv, 0, scale=0.02)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224))
    run_parity(npv, timm_model(npv), timm_grads, x)
    float32_logits_match(npv, timm_model, x)
