"""Every op's backward against directional finite differences, in float64.

Hypothesis draws shapes and a seed; NumPy draws the values from that seed.  The upstream gradient
is always random: a constant dy makes softmax's and LayerNorm's input gradients exactly zero, so a
backward returning zeros would pass.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradcheck import directional_check
from npvit.ops.activations import gelu_backward, gelu_forward, tanh_backward, tanh_forward
from npvit.ops.attention import attention_backward, attention_forward
from npvit.ops.dropout import drop_path_forward, dropout_backward, dropout_forward
from npvit.ops.layernorm import layernorm_backward, layernorm_forward
from npvit.ops.linear import linear_backward, linear_forward
from npvit.ops.loss import cross_entropy
from npvit.ops.patch_embed import patch_embed_backward, patch_embed_forward
from npvit.ops.tokens import tokens_backward, tokens_forward

SETTINGS = settings(max_examples=15, deadline=None)
seeds = st.integers(0, 2**31 - 1)


class Host:
    """Runs an op on the backend under test while the check itself works on host float64 arrays."""

    def __init__(self, backend):
        self.be = backend
        self.xp = backend.xp

    def dev(self, a):
        return None if a is None else self.be.from_numpy(np.asarray(a, dtype=np.float64))

    def host(self, a):
        return None if a is None else self.be.to_numpy(a)


@pytest.fixture(scope="module")
def h(backend):
    return Host(backend)


@SETTINGS
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=3), n_in=st.integers(1, 7),
       n_out=st.integers(1, 7), bias=st.booleans(), seed=seeds)
def test_linear(h, lead, n_in, n_out, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((*lead, n_in)), rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out) if bias else None
    y, cache = linear_forward(h.dev(x), h.dev(w), h.dev(b), h.be)
    dy = rng.standard_normal(h.host(y).shape)
    dx, dw, db = (h.host(g) for g in linear_backward(h.dev(dy), cache))
    inputs, grads = [x, w], [dx, dw]
    if bias:
        inputs.append(b)
        grads.append(db)
    f = lambda *a: h.host(linear_forward(*(h.dev(t) for t in a), *(() if bias else (None,)), h.be)[0])
    directional_check(f, inputs, grads, dy, seed=seed)


@SETTINGS
@given(rows=st.integers(1, 6), d=st.integers(2, 9), eps=st.sampled_from([1e-6, 1e-5, 1e-12]), seed=seeds)
def test_layernorm(h, rows, d, eps, seed):
    rng = np.random.default_rng(seed)
    x = 3.0 * rng.standard_normal((rows, d)) + rng.standard_normal()
    w, b = 1.0 + 0.5 * rng.standard_normal(d), rng.standard_normal(d)
    y, cache = layernorm_forward(h.dev(x), h.dev(w), h.dev(b), eps, h.be)
    # Invariant: before the affine, each row has mean 0 and variance 1 (up to eps).
    xhat = (h.host(y) - b) / w
    np.testing.assert_allclose(xhat.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(xhat.var(-1), 1.0 / (1.0 + eps / x.var(-1)), rtol=1e-9)
    dy = rng.standard_normal(x.shape)
    grads = [h.host(g) for g in layernorm_backward(h.dev(dy), cache)]
    f = lambda *a: h.host(layernorm_forward(*(h.dev(t) for t in a), eps, h.be)[0])
    directional_check(f, [x, w, b], grads, dy, seed=seed)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), kind=st.sampled_from(["exact", "tanh"]),
       seed=seeds)
def test_gelu(h, shape, kind, seed):
    rng = np.random.default_rng(seed)
    x = 2.5 * rng.standard_normal(shape)
    y, cache = gelu_forward(h.dev(x), kind, h.be)
    dy = rng.standard_normal(x.shape)
    dx = h.host(gelu_backward(h.dev(dy), cache))
    directional_check(lambda a: h.host(gelu_forward(h.dev(a), kind, h.be)[0]), [x], [dx], dy, seed=seed)


def test_gelu_exact_matches_math_erf(h):
    import math

    x = np.linspace(-9, 9, 2001)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    # 1 + erf(x) cancels for negative x in both implementations, so compare absolutely at a few ulp
    # of the largest value (|y| <= 9).
    np.testing.assert_allclose(h.host(gelu_forward(h.dev(x), "exact", h.be)[0]), ref, rtol=1e-14, atol=1e-14)
    # float32 stays exact to float32 rounding (PyTorch's own float32 GELU is ~1e-6 off float64)
    y32 = h.host(gelu_forward(h.be.from_numpy(x.astype(np.float32)), "exact", h.be)[0])
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ref, atol=2e-6, rtol=1e-6)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=seeds)
def test_tanh(h, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y, cache = tanh_forward(h.dev(x), h.be)
    dy = rng.standard_normal(x.shape)
    dx = h.host(tanh_backward(h.dev(dy), cache))
    directional_check(lambda a: h.host(tanh_forward(h.dev(a), h.be)[0]), [x], [dx], dy, seed=seed)


def test_attention_is_stable_at_extreme_logits(h):
    """Scores of +-1000 (float32's exp overflows at 89): the row max keeps everything finite.
    Tolerance: the op works in base 2 (q times log2 e), so at |score| ~ 1000 * log2 e ~ 1443 float32
    rounds a score by up to half an ulp, 6.1e-5, moving exp2 of a difference of two such scores by
    at most 2 * 6.1e-5 * ln 2 = 8.5e-5 relative (seen: 1.2e-5); float64 keeps 1e-6."""
    q, k, v = np.array([1000.0, 0.0, -1000.0]), np.array([1.0, -1.0, 0.999]), np.array([1.0, 2.0, 3.0])
    qkv = np.stack([q, k, v], axis=-1)[None]                                # (1, 3, 3): one head, dh 1
    scores = q[:, None] * k[None, :]
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    dy = np.array([[[0.5], [-1.0], [2.0]]])
    for dtype in (np.float32, np.float64):
        out, cache = attention_forward(h.be.from_numpy(qkv.astype(dtype)), 1, 1.0, h.be)
        dqkv = h.host(attention_backward(h.be.from_numpy(dy.astype(dtype)), cache)[0])
        np.testing.assert_allclose(h.host(out)[0, :, 0], probs @ v, rtol=1e-4 if dtype == np.float32 else 1e-6)
        assert np.isfinite(dqkv).all()
    np.testing.assert_allclose(h.host(out)[0, 1, 0], 2.0)                   # all-equal scores: the mean


@SETTINGS
@given(B=st.integers(1, 3), N=st.integers(1, 6), heads=st.integers(1, 3), dh=st.integers(1, 4),
       scale=st.one_of(st.none(), st.floats(0.1, 2.0)), drop=st.sampled_from([0.0, 0.3]),
       queries=st.one_of(st.none(), st.integers(1, 6)), seed=seeds)
def test_attention(h, B, N, heads, dh, scale, drop, queries, seed):
    """With ``queries`` (a last block whose other rows nothing reads) only the first tokens ask:
    their rows equal the full attention's, and dq is zero past them."""
    rng = np.random.default_rng(seed)
    queries = None if queries is None else min(queries, N)
    Nq = N if queries is None else queries
    qkv = rng.standard_normal((B, N, 3 * heads * dh))
    scale = dh ** -0.5 if scale is None else scale
    # A fixed dropout mask (replayed in every perturbed forward) makes the op deterministic.
    mask = None
    if drop:
        mask = h.dev((rng.random((B, heads, Nq, N)) >= drop) / (1 - drop))
    run = lambda a: attention_forward(h.dev(a), heads, scale, h.be, drop, None, drop_mask=mask, queries=queries)
    out, cache = run(qkv)
    assert h.host(out).shape == (B, Nq, heads * dh)
    dy = rng.standard_normal(h.host(out).shape)
    dqkv, dbias = attention_backward(h.dev(dy), cache)
    assert dbias is None
    directional_check(lambda a: h.host(run(a)[0]), [qkv], [h.host(dqkv)], dy, seed=seed)
    if queries is not None and not drop:
        full, _ = attention_forward(h.dev(qkv), heads, scale, h.be)
        np.testing.assert_allclose(h.host(out), h.host(full)[:, :Nq], rtol=1e-12, atol=1e-12)
        assert not h.host(dqkv)[:, Nq:, :heads * dh].any()


@st.composite
def score_bias_cases(draw):
    """Leading axes (ViT: (B,); Swin: (B, windows)) and a bias shape broadcastable to
    (*lead, H, N, N): a relative-position bias (H, N, N), Swin's (windows, H, N, N), a per-item
    mask (B, 1, N, N), a full one, or a shared (N, N)."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    heads, N = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    full = (*lead, heads, N, N)
    keep = draw(st.lists(st.booleans(), min_size=len(full) - 2, max_size=len(full) - 2))
    bias = tuple(n if k else 1 for n, k in zip(full[:-2], keep)) + (N, N)
    drop_leading = draw(st.integers(0, len(full) - 2))
    bias = bias[drop_leading:] if all(b == 1 for b in bias[:drop_leading]) else bias
    return lead, heads, N, bias


@SETTINGS
@given(case=score_bias_cases(), dh=st.integers(1, 3), drop=st.sampled_from([0.0, 0.3]), seed=seeds)
@example(case=((2, 2), 2, 5, (2, 1, 1, 5, 5)), dh=3, drop=0.3, seed=202)  # a small derivative of a large sum
def test_attention_with_score_bias(h, case, dh, drop, seed):
    """The bias's gradient is dS summed over the axes it was broadcast along; checked together
    with dqkv along one random direction, and on its own."""
    lead, heads, N, bshape = case
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((*lead, N, 3 * heads * dh))
    bias = 2.0 * rng.standard_normal(bshape)
    mask = h.dev((rng.random((*lead, heads, N, N)) >= drop) / (1 - drop)) if drop else None
    run = lambda a, b: attention_forward(h.dev(a), heads, 0.7, h.be, drop, None, drop_mask=mask,
                                         bias=h.dev(b), bias_grad=True)
    out, cache = run(qkv, bias)
    dy = rng.standard_normal(h.host(out).shape)
    dqkv, dbias = (h.host(g) for g in attention_backward(h.dev(dy), cache))
    assert dbias.shape == bshape
    directional_check(lambda a, b: h.host(run(a, b)[0]), [qkv, bias], [dqkv, dbias], dy, seed=seed)
    directional_check(lambda b: h.host(run(qkv, b)[0]), [bias], [dbias], dy, seed=seed + 1)
    # a constant mask (bias_grad=False) costs no gradient
    _, const = attention_forward(h.dev(qkv), heads, 0.7, h.be, bias=h.dev(bias))
    assert attention_backward(h.dev(dy), const)[1] is None


def test_attention_score_bias_check_catches_a_wrong_gradient(h):
    """Negative control: the bias gradient without its reduction over the broadcast batch axis
    (one window's share instead of the sum) must fail the check."""
    rng = np.random.default_rng(5)
    qkv, bias = rng.standard_normal((3, 2, 4, 6)), rng.standard_normal((2, 1, 4, 4))
    run = lambda b: attention_forward(h.dev(qkv), 1, 0.5, h.be, bias=h.dev(b), bias_grad=True)
    out, cache = run(bias)
    dy = rng.standard_normal(h.host(out).shape)
    _, dbias = attention_backward(h.dev(dy), cache)
    with pytest.raises(AssertionError, match="gradient check failed"):
        directional_check(lambda b: h.host(run(b)[0]), [bias], [h.host(dbias) / 3], dy, seed=5)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=3), p=st.sampled_from([0.1, 0.5]),
       per_sample=st.booleans(), seed=seeds)
def test_dropout_and_drop_path(h, shape, p, per_sample, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    fwd = drop_path_forward if per_sample else dropout_forward
    y, cache = fwd(h.dev(x), p, h.be.rng(seed), h.be)
    mask = h.host(cache.mask)
    # Kept entries are scaled by 1/(1-p), dropped ones are zero; drop path is one value per sample.
    assert set(np.unique(mask).round(12)) <= {0.0, round(1 / (1 - p), 12)}
    if per_sample:
        assert mask.shape == (shape[0],) + (1,) * (len(shape) - 1)
    # Same seed, same mask: reproducible.
    y2, _ = fwd(h.dev(x), p, h.be.rng(seed), h.be)
    np.testing.assert_array_equal(h.host(y), h.host(y2))
    dy = rng.standard_normal(x.shape)
    dx = h.host(dropout_backward(h.dev(dy), cache))
    replay = lambda a: h.host(fwd(h.dev(a), p, None, h.be, mask=cache.mask)[0])
    directional_check(replay, [x], [dx], dy, seed=seed)


def test_dropout_is_identity_without_rng_or_probability(h):
    x = h.dev(np.arange(6.0).reshape(2, 3))
    assert dropout_forward(x, 0.5, None, h.be)[0] is x
    assert dropout_forward(x, 0.0, h.be.rng(0), h.be)[0] is x


@SETTINGS
@given(B=st.integers(1, 2), C=st.integers(1, 3), gh=st.integers(1, 3), gw=st.integers(1, 3),
       ph=st.integers(1, 4), pw=st.integers(1, 4), D=st.integers(1, 5), seed=seeds)
def test_patch_embed_matches_convolution(h, B, C, gh, gw, ph, pw, D, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, gh * ph, gw * pw))
    w, b = rng.standard_normal((D, C, ph, pw)), rng.standard_normal(D)
    y, cache = patch_embed_forward(h.dev(x), h.dev(w), h.dev(b), h.be)
    # Reference: the stride-p convolution written as explicit loops over patches.
    ref = np.empty((B, gh * gw, D))
    for i in range(gh):
        for j in range(gw):
            patch = x[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]
            ref[:, i * gw + j] = np.einsum("bchw,dchw->bd", patch, w) + b
    np.testing.assert_allclose(h.host(y), ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(ref.shape)
    grads = [h.host(g) for g in patch_embed_backward(h.dev(dy), cache)]
    f = lambda *a: h.host(patch_embed_forward(*(h.dev(t) for t in a), h.be)[0])
    directional_check(f, [x, w, b], grads, dy, seed=seed)


@SETTINGS
@given(B=st.integers(1, 3), L=st.integers(1, 5), D=st.integers(1, 4), cls=st.booleans(), dist=st.booleans(),
       seed=seeds)
def test_tokens(h, B, L, D, cls, dist, seed):
    rng = np.random.default_rng(seed)
    n_prefix = cls + dist
    x, pos = rng.standard_normal((B, L, D)), rng.standard_normal((1, L + n_prefix, D))
    c = rng.standard_normal((1, 1, D)) if cls else None
    d = rng.standard_normal((1, 1, D)) if dist else None
    y, cache = tokens_forward(h.dev(x), h.dev(c), h.dev(d), h.dev(pos), h.be)
    dy = rng.standard_normal(h.host(y).shape)
    dx, dc, dd, dpos = (h.host(g) for g in tokens_backward(h.dev(dy), cache))
    inputs, grads = [x, pos], [dx, dpos]
    for t, g in ((c, dc), (d, dd)):
        if t is not None:
            inputs.append(t)
            grads.append(g)

    def f(x_, pos_, *prefix):
        it = iter(prefix)
        c_ = next(it) if cls else None
        d_ = next(it) if dist else None
        return h.host(tokens_forward(h.dev(x_), h.dev(c_), h.dev(d_), h.dev(pos_), h.be)[0])

    directional_check(f, inputs, grads, dy, seed=seed)


@SETTINGS
@given(B=st.integers(1, 5), K=st.integers(2, 7), smoothing=st.sampled_from([0.0, 0.1, 0.5]), seed=seeds)
def test_cross_entropy(h, B, K, smoothing, seed):
    rng = np.random.default_rng(seed)
    logits, labels = 2.0 * rng.standard_normal((B, K)), rng.integers(0, K, B)
    loss, dlogits = cross_entropy(h.dev(logits), h.be.from_numpy(labels), smoothing)
    # Reference: the definition written out directly.
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.full((B, K), smoothing / K)
    target[np.arange(B), labels] += 1 - smoothing
    assert loss == pytest.approx(-(target * logp).sum() / B, rel=1e-12)
    f = lambda a: np.array(cross_entropy(h.dev(a), h.be.from_numpy(labels), smoothing)[0])
    directional_check(f, [logits], [h.host(dlogits)], np.array(1.0), seed=seed)


def test_gradcheck_rejects_a_wrong_backward(h):
    """Negative control: the check must fail when the backward is off (here: LayerNorm's
    mean-of-(dxhat*xhat) term dropped), and when the step is so coarse that truncation dominates."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    y, cache = layernorm_forward(h.dev(x), h.dev(w), h.dev(b), 1e-6, h.be)
    dy = rng.standard_normal(x.shape)
    dxhat = dy * w
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    wrong_dx = (dxhat - dxhat.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    _, dw, db = (h.host(g) for g in layernorm_backward(h.dev(dy), cache))
    f = lambda *a: h.host(layernorm_forward(*(h.dev(t) for t in a), 1e-6, h.be)[0])
    with pytest.raises(AssertionError, match="gradient check failed"):
        directional_check(f, [x, w, b], [wrong_dx, dw, db], dy)
    assert np.abs(xhat).max() > 0  # keeps the wrong term non-trivial
    # Coarse step: GELU's curvature makes eps=0.5 central differences visibly wrong.
    x = rng.standard_normal(20)
    _, cache = gelu_forward(h.dev(x), "exact", h.be)
    dy = rng.standard_normal(20)
    dx = h.host(gelu_backward(h.dev(dy), cache))
    with pytest.raises(AssertionError, match="gradient check failed"):
        directional_check(lambda a: h.host(gelu_forward(h.dev(a), "exact", h.be)[0]), [x], [dx], dy, eps=0.5)
