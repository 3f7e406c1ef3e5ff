"""AdamW (decoupled weight decay), as ``torch.optim.AdamW``.

    p <- p * (1 - lr * wd)                            (decay first, on the old weights)
    m <- m + (1 - beta1) * (g - m)                    (= beta1 m + (1 - beta1) g, as torch's lerp)
    v <- beta2 * v + (1 - beta2) * g * g
    p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

eps sits outside the square root and after the bias correction, as in PyTorch.  Each line runs in
PyTorch's operation order, so float32 results agree with torch to rounding.
"""
import math

from .base import Optimizer


class AdamW(Optimizer):
    hyper_names = ("betas", "eps")

    def __init__(self, model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8,
                 no_decay=None, layer_decay=None, trainable=None):
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.betas, self.eps = (b1, b2), float(eps)
        super().__init__(model, lr, weight_decay, no_decay, layer_decay, trainable)

    def _update(self, p, g, state, lr, weight_decay):
        b1, b2 = self.betas
        if "exp_avg" not in state:
            xp = self._xp(p)
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        t = self.steps  # already counts this step
        if weight_decay:
            p *= 1.0 - lr * weight_decay
        m += (1.0 - b1) * (g - m)
        v *= b2
        v += (1.0 - b2) * g * g
        step_size = lr / (1.0 - b1 ** t)
        denom = self._xp(v).sqrt(v)
        denom /= math.sqrt(1.0 - b2 ** t)
        denom += self.eps
        p += (-step_size) * m / denom
