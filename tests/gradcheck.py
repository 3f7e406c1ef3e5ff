"""Directional finite-difference gradient checks (float64), in the manner of Chainer's check_backward.

For a function f with inputs x_i, a random upstream gradient dy and random directions v_i:

    analytic  = sum_i <grad_i, v_i>          where grad_i is the hand-written backward of <dy, f>
    numeric   = (<dy, f(x + eps v)> - <dy, f(x - eps v)>) / (2 eps)

Central differences have error O(eps^2 * f''') + O(float64 eps / eps); with eps = 1e-6 on O(1)
values that is ~1e-10 relative, so a tolerance of 1e-6 relative catches any real mistake (a wrong
term is off by O(1)) while leaving room for rounding.
"""
import numpy as np


def directional_check(f, inputs, grads, dy, seed=0, eps=1e-6, rtol=1e-6, atol=1e-9):
    """``f(*inputs) -> y``; ``grads`` the analytic gradients of <dy, y> w.r.t. each input.

    Returns (analytic, numeric) after asserting they agree; raises AssertionError otherwise.
    """
    rng = np.random.default_rng(seed)
    directions = [rng.standard_normal(np.shape(x)) for x in inputs]
    analytic = sum(float(np.sum(np.asarray(g) * v)) for g, v in zip(grads, directions))

    def objective(sign):
        shifted = [x + sign * eps * v for x, v in zip(inputs, directions)]
        return float(np.sum(np.asarray(f(*shifted)) * dy))

    numeric = (objective(+1) - objective(-1)) / (2 * eps)
    assert abs(analytic - numeric) <= atol + rtol * abs(numeric), (
        f"gradient check failed: analytic {analytic!r} vs numeric {numeric!r} "
        f"(diff {abs(analytic - numeric):.3e})")
    return analytic, numeric


def model_gradcheck(model, x, train, seed, eps=1e-6):
    """Check d<dy, model(x)>/d(params, x) along a random direction; returns (analytic, numeric)."""
    be = model.backend
    rng = np.random.default_rng(seed)
    out = model.forward(be.from_numpy(x), train=train, grad=True, rng=seed)
    outs = out if isinstance(out, tuple) else (out,)
    dys = [rng.standard_normal(tuple(o.shape)) for o in outs]
    dout = tuple(be.from_numpy(d) for d in dys) if isinstance(out, tuple) else be.from_numpy(dys[0])
    dx, grads = model.backward(dout)
    names = list(grads)
    base = {n: be.to_numpy(model.params[n]).copy() for n in names}

    def f(x_, *params):
        model.load_state_dict(dict(zip(names, params)))
        o = model.forward(be.from_numpy(x_), train=train, rng=seed)  # same seed: same masks
        o = o if isinstance(o, tuple) else (o,)
        return np.concatenate([be.to_numpy(a).ravel() for a in o])

    try:
        return directional_check(f, [x] + [base[n] for n in names],
                                 [be.to_numpy(dx)] + [be.to_numpy(grads[n]) for n in names],
                                 np.concatenate([d.ravel() for d in dys]), seed=seed, eps=eps)
    finally:
        model.load_state_dict(base)
