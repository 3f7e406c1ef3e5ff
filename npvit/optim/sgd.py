"""SGD with momentum, Nesterov momentum and (coupled) weight decay, as ``torch.optim.SGD``.

    g <- g + wd * p                                   (weight decay adds to the gradient)
    b <- g                     on the first step       (momentum buffer)
    b <- momentum * b + (1 - dampening) * g            afterwards
    g <- g + momentum * b      (Nesterov)   or   g <- b
    p <- p - lr * g

The operations run in PyTorch's order, so float32 results agree to rounding, not just to tolerance.
"""
from .base import Optimizer


class SGD(Optimizer):
    hyper_names = ("momentum", "dampening", "nesterov")

    def __init__(self, model, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 no_decay=None, layer_decay=None, trainable=None):
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.nesterov = float(momentum), float(dampening), bool(nesterov)
        super().__init__(model, lr, weight_decay, no_decay, layer_decay, trainable)

    def _update(self, p, g, state, lr, weight_decay):
        if weight_decay:
            g = g + weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= lr * g
