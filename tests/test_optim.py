"""Optimizers step for step against torch.optim on timm's VisionTransformer with the same weights.

Each case runs a few steps on both sides -- same batches, same random weights (every tensor
randomised, biases and LayerNorm affine included) -- with label smoothing, global-norm clipping
that bites, weight-decay groups and a warmup-cosine schedule (torch: LambdaLR with the formula
written out here, so the schedule is checked too), then compares every parameter.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay  # noqa: E402

import npvit  # noqa: E402
from npvit import optim  # noqa: E402
from npvit.model import ViTConfig, VisionTransformer  # noqa: E402

ARCH = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=24, depth=2, num_heads=3, mlp_ratio=2.0)
STEPS, WARMUP, BATCH, SMOOTHING = 6, 2, 8, 0.1


def random_weights(shapes, seed):
    """Every tensor random, scaled so activations stay O(1) and no gradient is degenerate."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            out[name] = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) <= 1:
            out[name] = 0.2 * rng.standard_normal(shape)
        elif name in ("cls_token", "pos_embed"):
            out[name] = 0.5 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[name] = rng.standard_normal(shape) / math.sqrt(fan_in)
    return out


def make_pair(dtype):
    model = VisionTransformer(ViTConfig(in_c=3, **ARCH), dtype=dtype)
    weights = random_weights({n: p.shape for n, p in model.params.items()}, seed=1)
    model.load_state_dict(weights)
    ref = TimmViT(in_chans=3, **ARCH).to(getattr(torch, dtype))
    ref.load_state_dict({n: torch.from_numpy(w) for n, w in weights.items()})
    ref.train()  # all dropout rates are 0, so train mode is deterministic on both sides
    return model, ref


def batches(dtype, n=STEPS):
    rng = np.random.default_rng(2)
    return [(rng.standard_normal((BATCH, 3, 16, 16)).astype(dtype), rng.integers(0, 5, BATCH))
            for _ in range(n)]


def warmup_cosine(s, warmup=WARMUP, total=STEPS):
    """Written out independently of npvit.optim.Schedule (see its docstring for the definition)."""
    if s < warmup:
        return (s + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))


def run_npvit(model, opt, data, clip=None, schedule=True):
    sched = optim.Schedule(opt, total_steps=STEPS, warmup_steps=WARMUP) if schedule else None
    norms = []
    for x, y in data:
        logits = model.forward(x, train=True, grad=True)
        loss, dlogits = npvit.cross_entropy(logits, y, label_smoothing=SMOOTHING)
        _, grads = model.backward(dlogits)
        if clip:
            norms.append(optim.clip_grad_norm(grads, clip, names=opt.trainable))
        if sched:
            sched.step()
        opt.step(grads)
    return norms


def run_torch(ref, opt, data, clip=None, schedule=True):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine) if schedule else None
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    norms = []
    for x, y in data:
        opt.zero_grad()
        loss = loss_fn(ref(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        if clip:
            params = [p for g in opt.param_groups for p in g["params"]]
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        opt.step()
        if sched:
            sched.step()
    return norms


# float64: the model's own gradients agree with autograd to ~1e-15 relative; a few steps amplify
# that a little, so 1e-12 absolute on O(1) weights is near machine precision with headroom.
# float32, whole loop: both sides' gradients carry ~1e-7 relative rounding (measured equal for npvit
# and torch), and Adam's m / sqrt(v) amplifies it for entries whose gradient nearly cancels across
# steps: measured up to 5e-5 after 6 steps, torch float32 itself is off float64 by 3e-6.  So 1e-4
# here (a wrong formula moves weights by ~lr = 1e-2); rounding-level agreement of the optimizer
# arithmetic is shown open-loop, on identical gradients, by test_float32_arithmetic_matches_torch.
TOL = {"float64": (1e-12, 1e-12), "float32": (1e-4, 1e-4)}


def assert_params_match(model, ref, dtype, adam_lr=None):
    """Every parameter equal within TOL.

    One exception under Adam: the key third of ``attn.qkv.bias`` has an exactly-zero true
    gradient (adding a constant to every key shifts each softmax row by a constant), so both
    sides compute rounding noise (~1e-17) and Adam's m / sqrt(v) turns noise into steps of up to
    lr.  Those entries are only held to "moved by at most lr per step" on both sides.
    """
    atol, rtol = TOL[dtype]
    sd = ref.state_dict()
    D = ARCH["embed_dim"]
    for name, p in model.params.items():
        r = sd[name].detach().numpy()
        err = np.abs(p - r) - (atol + rtol * np.abs(r))
        if adam_lr is not None and name.endswith("attn.qkv.bias"):
            assert np.abs(p[D:2 * D] - r[D:2 * D]).max() <= 2 * adam_lr * STEPS
            err[D:2 * D] = 0
        assert err.max() <= 0, f"{name}: max |npvit - torch| = {np.abs(p - r).max():.3e}"


def changed(model, before):
    return [n for n, p in model.params.items() if not np.array_equal(p, before[n])]


CASES = {
    # name: (npvit factory, torch factory, clip)
    "sgd_momentum_wd": (
        lambda m: optim.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-2),
        lambda r: torch.optim.SGD(param_groups_weight_decay(r, 1e-2, no_weight_decay_list=r.no_weight_decay()), lr=0.05,
                                  momentum=0.9),
        None),
    "sgd_nesterov_clip": (
        lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda r: torch.optim.SGD(param_groups_weight_decay(r, 1e-2, no_weight_decay_list=r.no_weight_decay()), lr=0.05,
                                  momentum=0.9, nesterov=True),
        0.5),
    "sgd_dampening_decay_all": (
        lambda m: optim.SGD(m, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05, no_decay=()),
        lambda r: torch.optim.SGD(r.parameters(), lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05),
        None),
    "adamw_groups_clip": (
        lambda m: optim.AdamW(m, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-8),
        lambda r: torch.optim.AdamW(param_groups_weight_decay(r, 0.05, no_weight_decay_list=r.no_weight_decay()), lr=1e-2,
                                    betas=(0.9, 0.98), eps=1e-8),
        0.5),
    "adamw_decay_all": (
        lambda m: optim.AdamW(m, lr=1e-2, weight_decay=0.1, no_decay=()),
        lambda r: torch.optim.AdamW(r.parameters(), lr=1e-2, weight_decay=0.1),
        None),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_for_step_parity_with_torch(case, dtype):
    make_opt, make_ref_opt, clip = CASES[case]
    model, ref = make_pair(dtype)
    before = {n: p.copy() for n, p in model.params.items()}
    data = batches(dtype)
    norms = run_npvit(model, make_opt(model), data, clip)
    ref_norms = run_torch(ref, make_ref_opt(ref), data, clip)
    # Every parameter moved (under SGD the qkv bias may not: its key third has a zero gradient).
    assert set(before) - set(changed(model, before)) <= {f"blocks.{i}.attn.qkv.bias" for i in range(2)}
    if clip:
        assert max(norms) > clip, "the clipping threshold never bit; the case would not test clipping"
        np.testing.assert_allclose(norms, ref_norms, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert_params_match(model, ref, dtype, adam_lr=1e-2 if case.startswith("adamw") else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_arithmetic_matches_torch_to_rounding(case):
    """Open loop: torch's float32 gradients feed both optimizers (and clipping) for every step.

    The update formulas run in torch's operation order, so SGD parameters end within a few float32
    ulps of the largest magnitude they took along the way (a value that crossed zero keeps the
    absolute rounding of its larger past): measured <= 2, allowed 8.  Not bit-exact: torch's
    vectorised kernels fuse multiply-adds (lerp uses fmadd) where NumPy rounds twice.  Adam's
    m / sqrt(v) magnifies those roundings for entries whose gradient nearly cancels across steps,
    so AdamW also gets 1e-4 of its total step length sum(lr_t) (measured <= 10 ulps ~ 2e-5 of it).
    A misplaced eps, decay or bias correction moves weights by >= 1e-2 of the step length.
    """
    make_opt, make_ref_opt, clip = CASES[case]
    model, ref = make_pair("float32")
    opt, ref_opt = make_opt(model), make_ref_opt(ref)
    sched = optim.Schedule(opt, total_steps=STEPS, warmup_steps=WARMUP)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, warmup_cosine)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    largest = {n: np.abs(p.detach().numpy()) for n, p in ref.named_parameters()}
    for x, y in batches("float32"):
        ref_opt.zero_grad()
        loss_fn(ref(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        grads = {n: p.grad.numpy().copy() for n, p in ref.named_parameters()}
        if clip:
            torch.nn.utils.clip_grad_norm_(list(ref.parameters()), clip)
            optim.clip_grad_norm(grads, clip)
        sched.step()
        opt.step(grads)
        ref_opt.step()
        ref_sched.step()
        for n, p in ref.named_parameters():
            largest[n] = np.maximum(largest[n], np.abs(p.detach().numpy()))
    path = 1e-2 * sum(warmup_cosine(s) for s in range(STEPS)) if case.startswith("adamw") else 0.0
    for name, p in ref.named_parameters():
        r = p.detach().numpy()
        err = np.abs(model.params[name] - r)
        ok = err <= 8 * np.spacing(largest[name]) + 1e-4 * path
        assert ok.all(), f"{name}: {(err / np.spacing(largest[name])).max():.1f} ulps from torch"


def test_layer_decay_groups_match_timm_and_train_like_torch():
    model, ref = make_pair("float64")
    opt = optim.AdamW(model, lr=1e-2, weight_decay=0.05, layer_decay=0.7)
    ref_groups = param_groups_layer_decay(ref, weight_decay=0.05, no_weight_decay_list=ref.no_weight_decay(),
                                          layer_decay=0.7)
    names = {id(p): n for n, p in ref.named_parameters()}
    theirs = {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in ref_groups for p in g["params"]}
    ours = {n: (g["lr_scale"], g["weight_decay"]) for g in opt.groups for n in g["names"]}
    assert ours.keys() == theirs.keys()
    for n in ours:
        assert ours[n][0] == pytest.approx(theirs[n][0], rel=1e-15) and ours[n][1] == theirs[n][1], n
    assert len({s for s, _ in ours.values()}) == ARCH["depth"] + 2  # really several scales
    for g in ref_groups:  # torch: per-group lr = base * lr_scale (what timm's schedulers do)
        g["lr"] = 1e-2 * g.pop("lr_scale")
    data = batches("float64")
    run_npvit(model, opt, data)
    run_torch(ref, torch.optim.AdamW(ref_groups, lr=1e-2), data)
    assert_params_match(model, ref, "float64", adam_lr=1e-2)


def test_frozen_parameters_are_untouched_and_have_no_state():
    model, _ = make_pair("float64")
    before = {n: p.copy() for n, p in model.params.items()}
    opt = optim.AdamW(model, lr=1e-2, trainable=["head", "blocks.1.mlp"])
    run_npvit(model, opt, batches("float64", 2), schedule=False)
    moved = set(changed(model, before))
    assert moved == {"head.weight", "head.bias"} | {f"blocks.1.mlp.{a}.{b}" for a in ("fc1", "fc2")
                                                   for b in ("weight", "bias")}
    assert set(opt.state) == moved
    with pytest.raises(ValueError, match="match no parameter"):
        optim.SGD(model, trainable=["heads"])


def test_default_no_decay_rule():
    model, _ = make_pair("float64")
    groups = {g["name"]: set(g["names"]) for g in optim.AdamW(model, weight_decay=0.05).groups}
    no_decay = groups["no_decay"]
    assert {"cls_token", "pos_embed", "norm.weight", "blocks.0.norm1.bias", "head.bias"} <= no_decay
    assert groups["decay"] == {n for n, p in model.params.items() if p.ndim > 1} - {"cls_token", "pos_embed"}
    decay_all = optim.AdamW(model, weight_decay=0.05, no_decay=()).groups
    assert len(decay_all) == 1 and decay_all[0]["weight_decay"] == 0.05


def test_schedule_curve_and_resume():
    model, _ = make_pair("float64")
    opt = optim.SGD(model, lr=0.1)
    sched = optim.Schedule(opt, total_steps=10, warmup_steps=3, decay="linear", min_lr=0.01)
    lrs = [sched.step() for _ in range(5)]
    assert lrs[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert lrs[3:] == pytest.approx([0.1, 0.1 - 0.09 / 7])
    again = optim.Schedule(opt, total_steps=99)
    again.load_state_dict(sched.state_dict())
    assert [again.step() for _ in range(5)] == [sched.step() for _ in range(5)]
    cos = optim.Schedule(optim.SGD(model, lr=1.0), total_steps=STEPS, warmup_steps=WARMUP)
    assert [cos.step() for _ in range(STEPS)] == pytest.approx([warmup_cosine(s) for s in range(STEPS)])


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_optimizer_state_roundtrip_continues_identically(kind):
    make = (lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True)) if kind == "sgd" else \
        (lambda m: optim.AdamW(m, lr=1e-2, weight_decay=0.05))
    data = batches("float64", 4)
    straight, _ = make_pair("float64")
    run_npvit(straight, make(straight), data, schedule=False)
    first, _ = make_pair("float64")
    opt = make(first)
    run_npvit(first, opt, data[:2], schedule=False)
    second, _ = make_pair("float64")
    second.load_state_dict(first.state_dict())
    opt2 = make(second)
    opt2.load_state_dict(opt.state_dict())
    run_npvit(second, opt2, data[2:], schedule=False)
    for n in straight.params:
        assert np.array_equal(straight.params[n], second.params[n]), n
    with pytest.raises(ValueError, match="SGD|AdamW"):
        (optim.AdamW if kind == "sgd" else optim.SGD)(second).load_state_dict(opt.state_dict())


def test_clip_matches_torch_and_returns_the_norm():
    rng = np.random.default_rng(0)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tg = [torch.from_numpy(g.copy()) for g in grads.values()]
    for t in tg:
        t.grad = t.clone()
    norm = optim.clip_grad_norm(grads, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(tg, 1.0)
    assert norm == pytest.approx(float(ref), rel=1e-14) and norm > 1.0
    for g, t in zip(grads.values(), tg):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14, atol=0)
    assert math.sqrt(sum((g ** 2).sum() for g in grads.values())) == pytest.approx(1.0, rel=1e-5)
    big = {"a": np.full(3, 0.1)}
    optim.clip_grad_norm(big, 10.0)
    assert np.array_equal(big["a"], np.full(3, 0.1))  # under the threshold: unchanged
    nan = {"a": np.array([1.0, np.nan])}
    assert math.isnan(optim.clip_grad_norm(nan, 1.0)) and np.isnan(nan["a"]).all()


def test_bad_gradients_are_named():
    model, _ = make_pair("float64")
    opt = optim.SGD(model, lr=0.1)
    grads = {n: np.zeros_like(p) for n, p in model.params.items()}
    del grads["head.bias"]
    with pytest.raises(ValueError, match="head.bias"):
        opt.step(grads)
    grads["head.bias"] = np.zeros(3)
    with pytest.raises(ValueError, match="head.bias.*shape"):
        opt.step(grads)
