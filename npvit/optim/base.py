"""What every npvit optimizer shares: the parameters it owns, its groups, lr, step count and state.

An optimizer is built over a model (it reads ``model.params`` at every step, so a later
``load_state_dict`` or ``to()`` is followed) or over a plain {name: array} dict (the loss scaler's
float32 master copies).  ``step(grads)`` updates the arrays in place, only for trainable names;
subclasses write ``_update(p, g, state, lr, weight_decay)`` for one array.

``opt.lr`` is the base learning rate of the next step (a schedule sets it); group ``g`` uses
``opt.lr * g["lr_scale"]``.  State arrays live on the parameters' backend, in their dtype.
"""
import numpy as np

from ..backends import array_library_of, get_backend
from .groups import param_groups


class Optimizer:
    hyper_names = ()  # constructor settings saved in state_dict and checked on load

    def __init__(self, target, lr, weight_decay=0.0, no_decay=None, layer_decay=None, trainable=None):
        if not lr >= 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self._target = target
        params = self.params
        self.groups = param_groups(params, weight_decay, no_decay, layer_decay, trainable)
        self.trainable = [n for g in self.groups for n in g["names"]]
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state = {n: {} for n in self.trainable}
        self._make_writeable(params)

    # --- the arrays being optimised ------------------------------------------------------
    @property
    def params(self):
        return self._target.params if hasattr(self._target, "params") else self._target

    def retarget(self, params):
        """Optimise ``params`` (a {name: array} dict with the trainable names) from now on."""
        missing = [n for n in self.trainable if n not in params]
        if missing:
            raise ValueError(f"retarget: the new parameters lack {missing[:5]}")
        self._target = params
        self._make_writeable(params)

    def _make_writeable(self, params):
        # In-place updates need writeable arrays; a memory-mapped checkpoint gives read-only ones.
        for n in self.trainable:
            p = params[n]
            if not getattr(getattr(p, "flags", None), "writeable", True):  # CuPy arrays have no such flag
                params[n] = p.copy()

    # --- one step ------------------------------------------------------------------------
    def step(self, grads):
        """Apply one update from ``grads`` ({name: array}); frozen names are ignored."""
        params = self.params
        missing = [n for n in self.trainable if n not in grads]
        if missing:
            raise ValueError(f"grads lack trainable parameter(s) {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}: pass the dict model.backward returned")
        self.steps += 1
        for group in self.groups:
            lr = self.lr * group["lr_scale"]
            for name in group["names"]:
                p, g = params[name], grads[name]
                if tuple(g.shape) != tuple(p.shape):
                    raise ValueError(f"gradient of {name} has shape {tuple(g.shape)}, "
                                     f"parameter has {tuple(p.shape)}")
                self._update(p, g.astype(p.dtype, copy=False), self.state[name], lr,
                             group["weight_decay"])

    def _update(self, p, g, state, lr, weight_decay):
        raise NotImplementedError

    # --- saving and restoring ------------------------------------------------------------
    def state_dict(self):
        """Host (NumPy) copy of everything a resume needs; plain types and arrays only."""
        to_numpy = self._backend().to_numpy
        return {
            "type": type(self).__name__,
            "lr": self.lr,
            "steps": self.steps,
            "hyper": {k: getattr(self, k) for k in self.hyper_names},
            "groups": [dict(g, names=list(g["names"])) for g in self.groups],
            "state": {n: {k: np.array(to_numpy(v)) for k, v in s.items()} for n, s in self.state.items()},
        }

    def load_state_dict(self, sd):
        if sd.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {sd.get('type')}, this optimizer is {type(self).__name__}")
        names = [n for g in sd["groups"] for n in g["names"]]
        if names != self.trainable:
            raise ValueError("optimizer state covers different parameters than this optimizer "
                             "(model or trainable/no_decay/layer_decay settings changed)")
        params, backend = self.params, self._backend()
        state = {}
        for n in self.trainable:
            state[n] = {}
            for k, v in sd["state"].get(n, {}).items():
                if tuple(np.shape(v)) != tuple(params[n].shape):
                    raise ValueError(f"optimizer state {n}.{k} has shape {np.shape(v)}, "
                                     f"parameter has {tuple(params[n].shape)}")
                state[n][k] = backend.from_numpy(np.asarray(v), dtype=params[n].dtype)
        for k, v in sd.get("hyper", {}).items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.groups = [dict(g, names=list(g["names"])) for g in sd["groups"]]
        self.lr, self.steps, self.state = float(sd["lr"]), int(sd["steps"]), state

    @staticmethod
    def _xp(array):
        return get_backend(array_library_of(array)).xp

    def _backend(self):
        first = self.params[self.trainable[0]]
        return get_backend(array_library_of(first))

    def __repr__(self):
        hyper = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyper_names)
        return (f"{type(self).__name__}(lr={self.lr}, {hyper}, groups={len(self.groups)}, "
                f"trainable={len(self.trainable)} tensors)")
