"""Global-norm gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` (2-norm).

    total = || (||g_1||, ||g_2||, ...) ||          coef = min(1, max_norm / (total + 1e-6))
    g_i <- g_i * coef                              (in place, every array, as torch does)

Returns the norm before clipping, so a caller can log it or spot a non-finite one.
"""
from ..backends import array_library_of, get_backend


def clip_grad_norm(grads, max_norm, names=None):
    """Clip the arrays ``grads[n]`` for ``n`` in ``names`` (default: all) in place; returns the norm."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    names = list(grads) if names is None else list(names)
    if not names:
        return 0.0
    xp = get_backend(array_library_of(grads[names[0]])).xp
    # Norms and coefficient in the gradients' dtype, as torch computes them.
    norms = xp.stack([xp.sqrt((grads[n] * grads[n]).sum()) for n in names])
    total = xp.sqrt((norms * norms).sum())
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)  # a NaN norm gives a NaN coef, as in torch
    for n in names:
        grads[n] *= coef
    return float(total)
