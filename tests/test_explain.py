"""Seeing inside: forward_intermediates / forward_head / reset_classifier against timm,
attention_maps against Hugging Face, npvit.explain against references written here from the
formulas on top of PyTorch autograd, the randomisation sanity check on the digits model, and the
``npvit explain`` command.

Tolerances: float64 1e-10 relative to the largest reference value (the parity suite's: the same
math in another order, ~1e-14 here); float32 2e-5 (float32 rounding through a few blocks, as the
parity suite's float32 logits); explanation maps 1e-8 (the issue's bound for float64; measured
~1e-14)."""
import json
from pathlib import Path

import numpy as np
import pytest

import npvit
from conftest import randomize_params
from npvit import explain
from npvit.cli import main

torch = pytest.importorskip("torch")
from parity import close  # noqa: E402
from torch_refs import hf_model, hf_swin, timm_model, timm_swin  # noqa: E402

DATA = Path(__file__).parent / "data"
KINDS = {"token": {}, "distilled": {"distilled": True}, "gap": {"classifier": "gap"}}
TORCH = {"float64": torch.float64, "float32": torch.float32}
REL = {"float64": 1e-10, "float32": 2e-5}


def small_vit(kind="token", dtype="float64", seed=0, backend="numpy", **overrides):
    """3 blocks on a non-square 3x4 grid (so a swapped reshape fails), random weights."""
    cfg = dict(img_size=(24, 32), patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=5,
               mlp_ratio=2.0, **KINDS[kind])
    cfg.update(overrides)
    m = npvit.VisionTransformer(npvit.ViTConfig(**cfg), dtype=dtype, backend=backend, seed=seed)
    randomize_params(m, seed)
    return m


def small_swin(rule="timm", dtype="float64", seed=0):
    """Three stages on a 16x12 grid, window 4: padded, non-square, clipped at the last stage."""
    cfg = dict(img_size=(32, 24), patch_size=2, window_size=4, embed_dim=8, depths=(2, 1, 2),
               num_heads=(1, 2, 4), num_classes=3, window_rule=rule)
    if rule == "hf":  # Hugging Face needs every stage's grid at least the window
        cfg.update(img_size=(32, 32), depths=(2, 2), num_heads=(1, 2))
    m = npvit.SwinTransformer(npvit.SwinConfig(**cfg), dtype=dtype, seed=seed)
    randomize_params(m, seed, scale=0.5)
    return m


def images(model, batch=2, seed=0, dtype="float64"):
    c = model.config
    return np.random.default_rng(seed).standard_normal((batch, c.in_c, *c.img_size)).astype(dtype)


def same_structure(ours, theirs, rel, what):
    """Tuples/lists compared item by item, arrays with ``close``."""
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs), f"{what}: structure differs"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same_structure(a, b, rel, f"{what}[{i}]")
    else:
        close(np.asarray(ours), theirs.detach().numpy(), rel, what)


# --- forward_intermediates, forward_head, reset_classifier ---------------------------------------
VIT_CALLS = [dict(), dict(indices=2), dict(indices=[-1, 0, 0], norm=True), dict(output_fmt="NLC"),
             dict(indices=[-2, 0], return_prefix_tokens=True), dict(intermediates_only=True, norm=True),
             dict(indices=1, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", KINDS)
def test_vit_forward_intermediates_equal_timms(kind, dtype):
    npv = small_vit(kind, dtype)
    ref = timm_model(npv, TORCH[dtype]).eval()
    x = images(npv, dtype=dtype)
    for kwargs in VIT_CALLS:
        ours = npv.forward_intermediates(x, **kwargs)
        with torch.no_grad():
            theirs = ref.forward_intermediates(torch.tensor(x), **kwargs)
        same_structure(ours, theirs, REL[dtype], f"{kind} {kwargs}")
    with pytest.raises(ValueError, match="out of range"):
        npv.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match="output_fmt"):
        npv.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_swin_forward_intermediates_equal_timms(dtype):
    npv = small_swin(dtype=dtype)
    ref = timm_swin(npv, TORCH[dtype]).eval()
    x = images(npv, dtype=dtype)
    for kwargs in [dict(), dict(indices=1), dict(indices=[-1, 0], norm=True), dict(indices=[1], norm=True),
                   dict(intermediates_only=True, norm=True)]:
        ours = npv.forward_intermediates(x, **kwargs)
        with torch.no_grad():
            theirs = ref.forward_intermediates(torch.tensor(x), **kwargs)
        same_structure(ours, theirs, REL[dtype], f"swin {kwargs}")


@pytest.mark.parametrize("kind", [*KINDS, "swin"])
def test_forward_head_on_forward_features_is_forward_and_timms_head(kind):
    npv = small_swin() if kind == "swin" else small_vit(kind)
    ref = (timm_swin(npv) if kind == "swin" else timm_model(npv)).eval()
    x = images(npv)
    features = npv.forward_features(x)
    close(npv.forward_head(features), npv.forward(x), 1e-10, "forward_head(forward_features(x))")
    with torch.no_grad():
        ref_features = ref.forward_features(torch.tensor(x))
        close(features, ref_features.numpy(), 1e-10, "forward_features")
        for pre_logits in (False, True):
            # timm's own features into both heads: the heads alone are compared
            close(npv.forward_head(ref_features.numpy(), pre_logits=pre_logits),
                  ref.forward_head(ref_features, pre_logits=pre_logits).numpy(), 1e-10, f"pre_logits={pre_logits}")
    with pytest.raises(ValueError, match="forward_head expects features"):
        npv.forward_head(features[:, :-1])


@pytest.mark.parametrize("kind", [*KINDS, "swin"])
def test_reset_classifier_has_timms_semantics(kind):
    """A new head of the new size in the same place, every other weight kept: with timm's
    reset_classifier and our new head copied in, the two models agree; num_classes=0 gives the
    pooled features timm's reset model returns."""
    npv = small_swin() if kind == "swin" else small_vit(kind)
    ref = (timm_swin(npv) if kind == "swin" else timm_model(npv)).eval()
    old = {n: a.copy() for n, a in npv.params.items()}
    x = images(npv)
    npv.reset_classifier(7)
    heads = [n for n in npv.params if n.startswith("head")]
    assert heads and all(npv.params[n].shape[0] == 7 for n in heads)
    assert npv.config.num_classes == 7 and npv.config.label_names is None
    for n, a in npv.params.items():
        if n not in heads:
            assert np.array_equal(a, old[n]), n
    assert not any(np.array_equal(npv.params[n][:5], old[n]) for n in heads)   # freshly drawn
    ref.reset_classifier(7)
    ref.to(torch.float64)
    with torch.no_grad():
        for n in heads:
            ref.get_parameter(n).copy_(torch.tensor(npv.params[n]))
        close(npv.forward(x), ref(torch.tensor(x)).numpy(), 1e-10, "logits after reset_classifier(7)")
    if kind == "distilled":  # npvit's distilled model needs its heads (timm keeps Identity heads)
        with pytest.raises(ValueError, match="distilled models need a head"):
            npv.reset_classifier(0)
        assert npv.config.num_classes == 7
        return
    npv.reset_classifier(0)
    ref.reset_classifier(0)
    assert not any(n.startswith("head") for n in npv.params)
    with torch.no_grad():
        close(npv.forward(x), ref(torch.tensor(x)).numpy(), 1e-10, "pooled features after reset_classifier(0)")
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="num_classes must be an integer"):
            npv.reset_classifier(bad)


# --- attention maps against Hugging Face ------------------------------------------------------------
def _eager_float64(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Hugging Face's eager attention with the softmax in the inputs' dtype: its own eager
    function takes the softmax in float32 (``softmax(..., dtype=torch.float32)``), which limits
    a float64 comparison to ~1e-7."""
    w = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        w = w + attention_mask
    w = torch.nn.functional.dropout(torch.softmax(w, dim=-1), p=dropout, training=module.training)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def hf_eager(ref, name):
    if name == "npvit_eager_float64":
        from transformers import AttentionInterface

        AttentionInterface.register(name, _eager_float64)
    ref.set_attn_implementation(name)
    return ref.eval()


@pytest.mark.parametrize("dtype, implementation", [("float64", "npvit_eager_float64"), ("float32", "eager")])
def test_vit_attention_maps_equal_hugging_faces(dtype, implementation):
    npv = small_vit(dtype=dtype, img_size=32, depth=3)
    ref = hf_eager(hf_model(npv, TORCH[dtype]), implementation)
    x = images(npv, dtype=dtype)
    with torch.no_grad():
        theirs = [a.numpy() for a in ref(torch.tensor(x), output_attentions=True).attentions]
    assert len(theirs) == 3 and theirs[0].shape == (2, 2, 17, 17)
    for layers, chosen in ((None, [0, 1, 2]), (1, [1]), (-1, [2]), ([-1, 0], [0, 2])):   # in block order
        ours = npv.attention_maps(x, layers)
        assert len(ours) == len(chosen)
        for a, i in zip(ours, chosen):
            close(a, theirs[i], REL[dtype], f"layers={layers}: block {i}")
    with pytest.raises(ValueError, match="out of range"):
        npv.attention_maps(x, [3])


def test_swin_attention_maps_equal_hugging_faces_per_stage():
    """Hugging Face returns the last block of each stage, windows flattened into the batch
    (B * windows, heads, n, n); npvit's maps are (B, windows, heads, n, n) for any block."""
    npv = small_swin(rule="hf")
    ref = hf_eager(hf_swin(npv), "npvit_eager_float64")
    x = images(npv)
    with torch.no_grad():
        theirs = [a.numpy() for a in ref(torch.tensor(x), output_attentions=True).attentions]
    ours = npv.attention_maps(x, layers=[1, 3])                    # depths (2, 2): the stages' last blocks
    assert [a.shape for a in ours] == [(2, 16, 1, 16, 16), (2, 4, 2, 16, 16)]
    for a, t in zip(ours, theirs):
        close(a.reshape(t.shape), t, 1e-10, "swin stage attention")
    assert len(npv.attention_maps(x)) == 4


# --- references from the formulas, on timm with PyTorch autograd ------------------------------------
def timm_with_probs(npv):
    """timm's model (float64) with its explicit softmax; ``probs`` fills with each block's
    post-softmax attention (B, H, N, N) on every forward, in block order."""
    ref = timm_model(npv).eval()
    probs = []
    for blk in ref.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda mod, inp, out: probs.append(out))
    return ref, probs


def relevance_row(R, cfg):
    """The rows the issue names: class token; distilled: mean of the class and distillation
    rows; gap: mean of every row; over the patch columns, as (B, gh, gw)."""
    P = cfg.num_prefix_tokens
    if cfg.distilled:
        row = (R[:, 0, P:] + R[:, 1, P:]) / 2
    elif cfg.classifier == "token":
        row = R[:, 0, P:]
    else:
        row = R.mean(dim=1)
    return row.reshape(R.shape[0], *cfg.grid_size).numpy()


def reference_rollout(probs, cfg, fusion="mean", ratio=0.0, normalise=lambda a: a / a.sum(dim=-1, keepdim=True),
                      order="forward"):
    B, H, N, _ = probs[0].shape
    eye = torch.eye(N, dtype=torch.float64)
    spared = torch.tensor([p * N + p for p in range(cfg.num_prefix_tokens)], dtype=torch.long)
    R = eye.expand(B, N, N)
    for A in probs:
        F = {"mean": A.mean(dim=1), "max": A.amax(dim=1), "min": A.amin(dim=1)}[fusion].clone()
        k = int(N * N * ratio)
        for b in range(B):                                        # per image
            flat = F[b].reshape(-1)
            lowest = torch.sort(flat, stable=True).indices[:k]    # ties: lower flat index first
            flat[lowest[~torch.isin(lowest, spared)]] = 0
        Ap = normalise(0.5 * F + 0.5 * eye)
        R = Ap @ R if order == "forward" else R @ Ap
    return relevance_row(R, cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_rollout_equals_the_formula_on_timms_attention(backend, kind):
    npv = small_vit(kind, backend=backend.name)
    ref, probs = timm_with_probs(npv)
    x = images(npv, batch=3)
    with torch.no_grad():
        ref(torch.tensor(x))
    assert len(probs) == 3
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.3, 0.9):
            ours = backend.to_numpy(explain.rollout(npv, backend.from_numpy(x), fusion, ratio))
            assert ours.shape == (3, 3, 4)
            close(ours, reference_rollout(probs, npv.config, fusion, ratio), 1e-8, f"{fusion}, discard {ratio}")
    # negative controls: vit-explain's column division (issue #16) and the product in the wrong
    # order give different maps, so the comparison above can fail
    good = reference_rollout(probs, npv.config, "mean", 0.3)
    column_division = lambda a: a / a.sum(dim=-1)[:, None, :]      # entry [i, j] over row j's sum  # noqa: E731
    for wrong in (reference_rollout(probs, npv.config, "mean", 0.3, normalise=column_division),
                  reference_rollout(probs, npv.config, "mean", 0.3, order="backward")):
        assert np.abs(wrong - good).max() > 1e-5 * np.abs(good).max()      # 1000 x the tolerance


def test_rollout_discard_ties_and_the_class_tokens_entry():
    """With q and k weights zero every attention is exactly uniform (all entries tie): the k
    lowest are then the first k in flat order, except the class token's own entry [0, 0]."""
    npv = small_vit("token")
    D, N = npv.config.embed_dim, npv.config.num_patches + 1
    for i in range(npv.config.depth):
        npv.params[f"blocks.{i}.attn.qkv.weight"][:2 * D] = 0
        npv.params[f"blocks.{i}.attn.qkv.bias"][:2 * D] = 0
    x = images(npv)
    ratio = 0.05                                        # k = 8 of the 169 entries, all in row 0
    F = np.full(N * N, 1.0 / N)
    F[1:int(N * N * ratio)] = 0                        # entry 0 is [0, 0]: kept though among the lowest
    A = 0.5 * F.reshape(N, N) + 0.5 * np.eye(N)
    A /= A.sum(axis=1, keepdims=True)
    R = np.linalg.matrix_power(A, 3)
    assert R[0, 1:8].max() < 0.5 * R[0, 8:].min()      # the dropped columns show, in the class row
    close(explain.rollout(npv, x, discard_ratio=ratio), np.broadcast_to(R[0, 1:].reshape(3, 4), (2, 3, 4)),
          1e-12, "ties")


def reference_gradient_attention(ref, probs, x, cfg, target=None, order="forward"):
    probs.clear()
    logits = ref(torch.tensor(x))
    for p in probs:
        p.retain_grad()
    t = logits.argmax(dim=1) if target is None else torch.tensor(np.broadcast_to(target, (x.shape[0],)).copy())
    logits.gather(1, t[:, None].long()).sum().backward()   # images are independent: one backward
    B, H, N, _ = probs[0].shape
    R = torch.eye(N, dtype=torch.float64).expand(B, N, N)
    for A in (probs if order == "forward" else probs[::-1]):
        R = R + (A.grad * A).clamp(min=0).mean(dim=1) @ R
    return relevance_row(R.detach(), cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_attention_equals_the_formula_on_torch_autograd(backend, kind):
    npv = small_vit(kind, backend=backend.name)
    ref, probs = timm_with_probs(npv)
    x = images(npv, batch=3)
    for target in (None, 4, [0, 3, 1]):
        ours = backend.to_numpy(explain.gradient_attention(npv, backend.from_numpy(x), target))
        close(ours, reference_gradient_attention(ref, probs, x, npv.config, target), 1e-8, f"target {target}")
    # negative control: the blocks applied in the order the backward shows them
    good = reference_gradient_attention(ref, probs, x, npv.config)
    wrong = reference_gradient_attention(ref, probs, x, npv.config, order="backward")
    assert np.abs(wrong - good).max() > 1e-5 * np.abs(good).max()          # 1000 x the tolerance


@pytest.mark.parametrize("kind", ["token", "distilled", "swin"])
def test_input_gradients_equal_torch_autograd(backend, kind):
    npv = small_swin() if kind == "swin" else small_vit(kind, backend=backend.name)
    if kind == "swin":
        npv.to(backend.name)
    ref = (timm_swin(npv) if kind == "swin" else timm_model(npv)).eval()
    x = images(npv)
    for target in (None, [2, 0]):
        xt = torch.tensor(x, requires_grad=True)
        logits = ref(xt)
        t = logits.argmax(dim=1) if target is None else torch.tensor(target)
        logits.gather(1, t[:, None]).sum().backward()
        dx = backend.to_numpy(explain.input_gradients(npv, backend.from_numpy(x), target))
        close(dx, xt.grad.numpy(), 1e-10, f"input gradient, target {target}")
        close(backend.to_numpy(explain.saliency_map(backend.from_numpy(dx))), np.abs(xt.grad.numpy()).max(axis=1),
              1e-10, "saliency map")


def test_explanations_refuse_what_they_cannot_do():
    swin, vit = small_swin(), small_vit()
    x = images(swin)
    for f in (explain.rollout, explain.gradient_attention):
        with pytest.raises(TypeError, match="input_gradients"):
            f(swin, x)
    assert explain.input_gradients(swin, x).shape == x.shape
    x = images(vit)
    for target, error, match in ((5, ValueError, "out of range"), (-1, ValueError, "out of range"),
                                 ([1, 2, 3], ValueError, "3 classes for 2 images"),
                                 (True, TypeError, "class index"), (1.5, TypeError, "class index")):
        for f in (explain.gradient_attention, explain.input_gradients):
            with pytest.raises(error, match=match):
                f(vit, x, target)
    with pytest.raises(ValueError, match="head_fusion"):
        explain.rollout(vit, x, head_fusion="sum")
    for ratio in (1.0, -0.1, "0.5"):
        with pytest.raises(ValueError, match="discard_ratio"):
            explain.rollout(vit, x, discard_ratio=ratio)
    vit.reset_classifier(0)
    with pytest.raises(ValueError, match="needs a classification head"):
        explain.gradient_attention(vit, x)


def test_pictures():
    """The colormap runs dark to light; an overlay keeps the picture's size, is the picture
    itself at alpha 0 and the colours at alpha 1, and leaves a center crop's cut-off border alone."""
    c = explain.colormap(np.linspace(0, 1, 11))
    assert c.shape == (11, 3) and (c >= 0).all() and (c <= 1).all()
    assert (np.diff(c.sum(axis=1)) > 0).all()
    pic = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    heat = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(explain.overlay(pic, heat, alpha=0.0), pic)
    full = explain.overlay(pic, heat, alpha=1.0)
    assert full.shape == pic.shape
    # rounded to 256 levels: half a level, and float32 resizing
    np.testing.assert_allclose(full[0, 0] / 255, explain.colormap(0.0), atol=0.6 / 255)
    np.testing.assert_allclose(full[-1, -1] / 255, explain.colormap(1.0), atol=0.6 / 255)
    from npvit.preprocess.config import preset

    cropped = explain.overlay(pic, heat, alpha=1.0, preprocess=preset("timm", 16))   # 16x26 resize, 16x16 crop
    assert np.array_equal(cropped[:, :8], pic[:, :8]) and np.array_equal(cropped[:, -8:], pic[:, -8:])
    assert not np.array_equal(cropped[:, 10:40], pic[:, 10:40])
    with pytest.raises(ValueError, match="alpha"):
        explain.overlay(pic, heat, alpha=1.5)
    with pytest.raises(ValueError, match="2-D map"):
        explain.overlay(pic, heat[0])


# --- does the map mean anything? (Adebayo et al. 2018) -------------------------------------------------
def test_digit_maps_change_when_the_weights_are_reinitialised_and_sit_on_the_strokes():
    """On the 359 held-out digits, with the shipped model: the rank correlation (Spearman) of each
    digit's map with the map of the same digit and class under re-initialised weights (npvit's
    init, seeds 1-8), and the share of the map's mass on stroke pixels (input >= 0.5; 31% of the
    pixels).  Measured (README "Seeing inside", tools/explain_figures.py): mean correlation
    rollout -0.04, gradient -0.02, saliency 0.24 (per seed: rollout -0.55 to 0.61, gradient -0.12
    to 0.33, saliency 0.22 to 0.26); re-initialising the head alone leaves rollout unchanged (1.00:
    it never reads the head).  Mass on strokes, each map less its minimum (as an overlay shows
    it): saliency 0.417, gradient x attention 0.505, rollout 0.497.  The bounds leave a margin of
    about 0.1 (correlations) and 0.05 (mass)."""
    pytest.importorskip("sklearn")
    from scipy.stats import spearmanr

    from npvit.preprocess.transform import transform_one
    from npvit.train.datasets import load_digits_split

    _, test = load_digits_split()
    model = npvit.load("digits")
    x = np.stack([transform_one(im, model.preprocess) for im in test.images(range(len(test.labels)))])
    y = test.labels

    def maps(m):
        return {"rollout": explain.rollout(m, x), "gradient": explain.gradient_attention(m, x, y),
                "saliency": explain.saliency_map(explain.input_gradients(m, x, y))}

    def spearman(a, b):
        return np.mean([spearmanr(u.ravel(), v.ravel())[0] for u, v in zip(a, b)])

    trained = maps(model)
    corr = {k: [] for k in trained}
    for seed in range(1, 9):
        for k, v in maps(npvit.VisionTransformer(model.config, seed=seed)).items():
            corr[k].append(spearman(trained[k], v))
    mean = {k: np.mean(v) for k, v in corr.items()}
    assert abs(mean["rollout"]) < 0.15 and abs(mean["gradient"]) < 0.1 and 0.1 < mean["saliency"] < 0.35, mean
    assert max(max(v) for v in corr.values()) < 0.75, corr
    head_only = npvit.VisionTransformer(model.config, seed=0)
    head_only.load_state_dict({**model.state_dict(), **{n: a for n, a in head_only.state_dict().items()
                                                       if n.startswith("head")}})
    assert spearman(trained["rollout"], explain.rollout(head_only, x)) > 0.999    # positive control

    stroke = x.mean(axis=1) * 0.5 + 0.5 >= 0.5                                     # (359, 16, 16)
    area = stroke.mean()
    assert 0.25 < area < 0.35

    def on_strokes(m):
        m = np.kron(m, np.ones((1, 4, 4))) if m.shape[1:] == (4, 4) else m   # patches -> their pixels
        m = m - m.min(axis=(1, 2), keepdims=True)
        return ((m * stroke).sum(axis=(1, 2)) / m.sum(axis=(1, 2))).mean()

    mass = {k: on_strokes(v.astype(np.float64)) for k, v in trained.items()}
    assert mass["saliency"] > 0.36 and mass["gradient"] > 0.45 and mass["rollout"] > 0.44, mass
    assert min(mass.values()) > area + 0.05


# --- npvit explain ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model():
    return npvit.load("digits")


def run(capsys, *argv):
    code = main(["explain", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_an_overlay_per_picture_at_its_own_size(tmp_path, capsys, digits_model):
    from PIL import Image

    code, out, err = run(capsys, "digits", DATA / "digit_3.png", "--out", tmp_path / "d3.png")
    assert code == 0, err
    assert out.strip() == f"{DATA / 'digit_3.png'} -> {tmp_path / 'd3.png'} (3, 0.9412)"
    with Image.open(tmp_path / "d3.png") as im:
        assert im.size == (8, 8) and im.mode == "RGB"
        written = np.asarray(im)
    # the same pixels from the Python API
    from npvit.predict import resolve_preprocess
    from npvit.preprocess.images import to_rgb
    from npvit.preprocess.transform import transform_one

    rgb = to_rgb(DATA / "digit_3.png")
    x = transform_one(rgb, resolve_preprocess(digits_model))[None]
    heat = explain.gradient_attention(digits_model, x, 3)[0]
    assert np.array_equal(written, explain.overlay(rgb, heat, 0.5, digits_model.preprocess))
    # a photo at its own size, saliency (the map at the model's input resolution)
    code, out, err = run(capsys, "digits", DATA / "chelsea.png", "--method", "saliency", "--alpha", "0.8",
                         "--out", tmp_path / "cat.jpg")
    assert code == 0, err
    with Image.open(tmp_path / "cat.jpg") as im:
        assert im.size == (451, 300) and im.format == "JPEG"


def test_cli_folder_in_folder_out_and_json(tmp_path, capsys):
    import shutil

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(DATA / "digit_3.png", src / "a.png")
    shutil.copy(DATA / "digit_7.png", src / "sub" / "b.png")
    (src / "sub" / "c.png").write_bytes(b"not a picture")
    code, out, err = run(capsys, "digits", src, "--method", "rollout", "--out", tmp_path / "out", "--batch-size", "2")
    assert code == 1 and "c.png" in err                     # the broken file is reported and skipped
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == ["a.png", "sub/b.png"]
    code, out, err = run(capsys, "digits", DATA / "digit_3.png", DATA / "digit_7.png", "--json",
                         "--target", "7", "--out", tmp_path / "maps.json")
    assert code == 0, err
    records = json.loads((tmp_path / "maps.json").read_text())
    assert [r["target"] for r in records] == [7, 7] and records[0]["method"] == "gradient"
    x = np.stack([np.asarray(r["grid"]) for r in records])
    assert x.shape == (2, 4, 4)
    code, out, err = run(capsys, "digits", DATA / "digit_7.png", "--json", "--method", "saliency", "--out", "-")
    assert code == 0 and np.asarray(json.loads(out)[0]["grid"]).shape == (16, 16)


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    npvit.SwinTransformer(npvit.SwinConfig(img_size=32, patch_size=2, window_size=4, embed_dim=8, depths=(2, 2),
                                           num_heads=(1, 2), num_classes=3)).save(tmp_path / "swin.npz")
    (tmp_path / "afile").write_text("x")
    digit = DATA / "digit_3.png"
    for argv, message in (
            (["digits", tmp_path / "missing.png", "--out", tmp_path / "o"], "not found"),
            (["digits", digit, "--alpha", "2", "--out", tmp_path / "o.png"], "--alpha"),
            (["digits", digit, "--target", "11", "--out", tmp_path / "o.png"], "out of range"),
            (["digits", digit, "--target", "cat", "--out", tmp_path / "o.png"], "neither a class index"),
            (["digits", digit, "--discard-ratio", "1", "--out", tmp_path / "o.png"], "--discard-ratio"),
            (["digits", digit, digit, "--out", tmp_path / "afile"], "is a file"),
            (["digits", digit, DATA / "digit_3.png", "--out", tmp_path / "o"], "would both be written"),
            (["digits", digit, "--json", "--out", tmp_path / "no" / "such.json"], "does not exist"),
            ([tmp_path / "swin.npz", digit, "--method", "rollout", "--out", tmp_path / "o.png"], "--method saliency")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    code, out, err = run(capsys, tmp_path / "swin.npz", digit, "--method", "saliency", "--out", tmp_path / "s.png")
    assert code == 0, err
