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
