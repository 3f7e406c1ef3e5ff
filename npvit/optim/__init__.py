"""Training the model: optimizers, parameter groups, learning-rate schedules, clipping, loss scaling.

    from npvit import optim
    opt = optim.AdamW(model, lr=1e-3, weight_decay=0.05)
    sched = optim.Schedule(opt, total_steps=1000, warmup_steps=100, decay="cosine")
    sched.step(); opt.step(grads)           # per step: set the lr, then update model.params in place
"""
from .adamw import AdamW
from .base import Optimizer
from .clip import clip_grad_norm
from .groups import DEFAULT_NO_DECAY, param_groups, select_trainable
from .scaler import DynamicLossScaler
from .schedule import Schedule
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "AdamW", "Schedule", "clip_grad_norm", "DynamicLossScaler",
           "param_groups", "select_trainable", "DEFAULT_NO_DECAY"]
