"""Dynamic loss scaling with high-precision master weights, for low-precision (float16) training.

    backward(dlogits * S)          gradients come out S times larger, so small ones do not flush
                                   to zero in float16
    g32 = float32(g) / S           unscale into the master dtype (then clip, if wanted)
    finite(g32)?  yes: optimizer steps the float32 master copy; model params <- cast(master)
                  no:  skip the step, S <- S * backoff                   (overflow at this scale)
    after ``growth_interval`` finite steps in a row:  S <- S * growth

The same rules as ``torch.amp.GradScaler``.  Backend-generic: only array methods and ``xp`` of the
arrays are used, so it runs on NumPy or CuPy.  npvit models compute in float32/float64 today, so
on a CPU it is exercised as a float32 model with float64 master weights.

    scaler = DynamicLossScaler(opt)                 # after building the optimizer over the model
    dx, grads = model.backward(scaler.scale(dlogits))
    grads = scaler.unscale(grads)
    clip_grad_norm(grads, 1.0)                      # optional, on true-size gradients
    scaler.step(grads)                              # False when the step was skipped
"""
import numpy as np

from ..backends import array_library_of, get_backend


class DynamicLossScaler:
    def __init__(self, optimizer, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, master_dtype="float32"):
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1 and growth_interval >= 1):
            raise ValueError("need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and "
                             "growth_interval >= 1")
        self.optimizer = optimizer
        self._model_target = optimizer._target  # the model (or dict) whose params the model computes with
        self.scale_value, self.growth_tracker = float(init_scale), 0
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.master_dtype = int(growth_interval), str(master_dtype)
        params = optimizer.params
        self.master = {n: params[n].astype(self.master_dtype, copy=True) for n in optimizer.trainable}
        optimizer.retarget(self.master)
        for state in optimizer.state.values():  # any existing optimizer state moves to master precision
            for k in state:
                state[k] = state[k].astype(self.master_dtype)

    @property
    def _model_params(self):
        t = self._model_target
        return t.params if hasattr(t, "params") else t

    def scale(self, dlogits):
        """The upstream gradient times the current scale (a pair for distilled training)."""
        if isinstance(dlogits, (tuple, list)):
            return type(dlogits)(d * self.scale_value for d in dlogits)
        return dlogits * self.scale_value

    def unscale(self, grads):
        """{name: gradient / scale} in the master dtype, for the trainable names only."""
        inv = 1.0 / self.scale_value
        return {n: grads[n].astype(self.master_dtype) * inv for n in self.optimizer.trainable}

    def step(self, master_grads):
        """Step if every gradient is finite, then adjust the scale.  Returns whether it stepped."""
        names = self.optimizer.trainable
        xp = get_backend(array_library_of(master_grads[names[0]])).xp
        finite = bool(xp.stack([xp.isfinite(master_grads[n]).all() for n in names]).all())  # one sync
        if not finite:
            self.scale_value *= self.backoff_factor
            self.growth_tracker = 0
            return False
        self.optimizer.step(master_grads)
        model_params = self._model_params
        for n in names:
            model_params[n][...] = self.master[n]  # cast back to the compute dtype, in place
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale_value *= self.growth_factor
            self.growth_tracker = 0
        return True

    def state_dict(self):
        to_host = get_backend(array_library_of(next(iter(self.master.values())))).to_numpy
        return {"scale": self.scale_value, "growth_tracker": self.growth_tracker,
                "master": {n: np.array(to_host(a)) for n, a in self.master.items()}}

    def load_state_dict(self, sd):
        self.scale_value, self.growth_tracker = float(sd["scale"]), int(sd["growth_tracker"])
        backend = get_backend(array_library_of(next(iter(self.master.values()))))
        for n, a in sd["master"].items():
            if n not in self.master or tuple(np.shape(a)) != tuple(self.master[n].shape):
                raise ValueError(f"loss-scaler master weight {n} does not match this model")
            self.master[n][...] = backend.from_numpy(np.asarray(a), dtype=self.master_dtype)
