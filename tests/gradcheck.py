"""Directional finite-difference gradient checks (float64), in the manner of Chainer's check_backward.

For a function f with inputs x_i, a random upstream gradient dy and random directions v_i:

    analytic  = sum_i <grad_i, v_i>          where grad_i is the hand-written backward of <dy, f>
    numeric   = (<dy, f(x + eps v)> - <dy, f(x - eps v)>) / (2 eps)

Central differences have error O(eps^2 * f''') + O(float64 eps / eps); with eps = 1e-6 on O(1)
values that is ~1e-10 relative, so a tolerance of 1e-6 relative catches any real mistake (a wrong
term is off by O(1)) while leaving room for rounding.  The rounding term is relative to the size of
the objective, not of the derivative: each <dy, f> is a sum whose terms total S = sum |dy f| in
size and is computed to about float64 eps * S, so the difference of two, over 2 eps, carries up to
float64 eps * S / eps of noise (1.3e-8 for an attention check with S = 57, whose directional
derivative was 6.5e-4: the relative tolerance alone allowed 1.7e-9 and a correct backward measured
2.6e-9).  The tolerance adds that term.
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
        """(<dy, f> at x + sign eps v, the size of its terms)."""
        terms = np.asarray(f(*[x + sign * eps * v for x, v in zip(inputs, directions)])) * dy
        return float(np.sum(terms)), float(np.sum(np.abs(terms)))

    (plus, size_plus), (minus, size_minus) = objective(+1), objective(-1)
    numeric = (plus - minus) / (2 * eps)
    rounding = np.finfo(np.float64).eps * max(size_plus, size_minus) / eps
    assert abs(analytic - numeric) <= atol + rtol * abs(numeric) + rounding, (
        f"gradient check failed: analytic {analytic!r} vs numeric {numeric!r} "
        f"(diff {abs(analytic - numeric):.3e}, rounding allowance {rounding:.1e})")
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
