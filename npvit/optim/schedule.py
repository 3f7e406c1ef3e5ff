"""Learning rate per step: linear warmup, then cosine or linear decay to ``min_lr``.

For step s (0-based, counting optimizer steps) with W warmup steps out of T:

    s <  W:   lr = base_lr * (s + 1) / W                      (the last warmup step reaches base_lr)
    s >= W:   q  = (s - W) / (T - W)                          (0 at the end of warmup, < 1 at s = T-1)
              cosine:   lr = min_lr + (base_lr - min_lr) * (1 + cos(pi q)) / 2
              linear:   lr = min_lr + (base_lr - min_lr) * (1 - q)
              constant: lr = base_lr

Call ``schedule.step()`` before every ``opt.step(grads)``: it sets ``opt.lr`` for that step.
``state_dict()`` holds the step counter, so a resumed run continues the same curve.
"""
import math

DECAYS = ("cosine", "linear", "constant")


class Schedule:
    def __init__(self, optimizer, total_steps, warmup_steps=0, decay="cosine", min_lr=0.0, base_lr=None):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, "
                             f"got total_steps={total_steps}, warmup_steps={warmup_steps}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr if base_lr is None else base_lr)
        if not 0.0 <= min_lr <= self.base_lr:
            raise ValueError(f"min_lr must be in [0, base_lr={self.base_lr}], got {min_lr}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.decay, self.min_lr = decay, float(min_lr)
        self.last_step = 0  # the step the next call to step() prepares

    def lr_at(self, s):
        """The learning rate of optimizer step ``s`` (0-based)."""
        W, T = self.warmup_steps, self.total_steps
        if s < W:
            return self.base_lr * (s + 1) / W
        if self.decay == "constant":
            return self.base_lr
        q = min(1.0, (s - W) / max(1, T - W))
        shape = 0.5 * (1.0 + math.cos(math.pi * q)) if self.decay == "cosine" else 1.0 - q
        return self.min_lr + (self.base_lr - self.min_lr) * shape

    def step(self):
        """Set the optimizer's lr for the coming step and advance; returns that lr."""
        self.optimizer.lr = self.lr_at(self.last_step)
        self.last_step += 1
        return self.optimizer.lr

    def state_dict(self):
        return {"last_step": self.last_step, "base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay, "min_lr": self.min_lr}

    def load_state_dict(self, sd):
        self.last_step = int(sd["last_step"])
        self.base_lr, self.min_lr = float(sd["base_lr"]), float(sd["min_lr"])
        self.total_steps, self.warmup_steps, self.decay = int(sd["total_steps"]), int(sd["warmup_steps"]), sd["decay"]
