"""What every npvit architecture shares: parameters, I/O facades, input checks, forward/backward plumbing.

An architecture (``VisionTransformer``, ``SwinTransformer``) subclasses ``Model`` and provides:

* ``config_class``: its config dataclass, whose ``parameter_shapes()`` is the schema (schema.py);
* ``_forward(x, run) -> (output, cache)``: the network, on checked images, for a ``Pass``;
* ``_backward(dout, cache, input_grad) -> (dx, grads)``: the same steps in reverse.

Everything else -- ``state_dict``/``load_state_dict`` under PyTorch's names, ``save``, ``predict``,
``to``, ``forward``/``backward`` bookkeeping, the eval fast path's choice, checks with errors that
say how to fix the input -- is written once here.
"""
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..backends import array_library_of, get_backend
from ..ops.sublayer import Pass
from .init import init_params

DTYPES = ("float32", "float64")


class Model:
    """Parameters in a dict under PyTorch's state-dict names, a hand-written forward and backward."""

    config_class = None
    init_std = 0.02  # std of linear weights at initialisation (model/init.py)
    default_preprocess = "timm"  # the preprocessing preset timm's configs give the architecture

    def __init__(self, config=None, dtype: str = "float32", backend="numpy", seed: int = 0, **overrides):
        cfg = config if config is not None else self.config_class()
        self._setup(cfg.replace(**overrides) if overrides else cfg, dtype, backend, seed)
        self.params = {n: self.backend.from_numpy(a, dtype=self.dtype)
                       for n, a in init_params(self.config.parameter_shapes(), seed, self.dtype, self.init_std)}

    @classmethod
    def from_state_dict(cls, config, state_dict, dtype="float32", backend="numpy", seed=0):
        """A model holding ``state_dict`` (every name and shape checked against ``config``), built
        without drawing random weights first (seconds for B/16, all of them thrown away)."""
        model = cls.__new__(cls)
        model._setup(config, dtype, backend, seed)
        model.params = {}
        model.load_state_dict(state_dict, strict=True)
        return model

    def _setup(self, config, dtype, backend, seed):
        """Everything but the parameters."""
        self.config = config
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = str(dtype)
        self.backend = get_backend(backend)
        self.preprocess = None  # set by loaders and variants (see npvit.preprocess)
        self._dropout_rng = self.backend.rng(seed)
        self._cache = None
        self._build()
        # Eval forwards take the backend's fused kernels, each thread running whole images; set
        # False to run the op-by-op reference path (the two agree to float rounding:
        # tests/test_inference.py).
        self.fast_inference = True

    # --- parameters ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """{timm parameter name: array}; the arrays are the model's own (as in PyTorch)."""
        return dict(self.params)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the model; names and shapes must match (all listed in one error).

        With ``strict=False`` missing and unexpected names are allowed and returned as
        ``(missing, unexpected)``; a shape mismatch is always an error.
        """
        expected = self.config.parameter_shapes()
        missing = [n for n in expected if n not in state_dict]
        unexpected = [n for n in state_dict if n not in expected]
        misshaped = [f"{n}: expected {expected[n]}, got {tuple(np.shape(state_dict[n]))}"
                     for n in expected if n in state_dict
                     and tuple(np.shape(state_dict[n])) != tuple(expected[n])]
        problems = []
        if misshaped:
            problems.append("shape mismatch for " + "; ".join(misshaped))
        if strict and missing:
            problems.append("missing " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected " + ", ".join(unexpected))
        if problems:
            raise ValueError("load_state_dict failed: " + " | ".join(problems)
                             + f" (check the model config: {self._config_hint})")
        loaded = {}
        for name in expected:
            if name in state_dict:
                loaded[name] = self._to_param(state_dict[name], name)
        self.params.update(loaded)  # only after every array converted: never half-loaded
        return missing, unexpected

    _config_hint = "depth, embed_dim, num_classes, ..."

    def _to_param(self, value, name):
        if array_library_of(value) == self.backend.name:
            arr = self.backend.xp.asarray(value, dtype=self.dtype)
        else:
            arr = self.backend.from_numpy(_host_array(value), dtype=self.dtype)
        if not bool(self.backend.xp.isfinite(arr).all()):
            raise ValueError(f"parameter {name} holds NaN or inf values")
        return arr.copy() if arr is value else arr

    def num_params(self) -> int:
        return int(sum(int(np.prod(a.shape)) for a in self.params.values()))

    def to(self, backend=None, dtype: Optional[str] = None) -> "Model":
        """Move the model to another backend and/or dtype, in place; returns the model."""
        new_backend = get_backend(backend) if backend is not None else self.backend
        if dtype is not None and str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        new_dtype = str(dtype) if dtype is not None else self.dtype
        self.params = {n: new_backend.from_numpy(self.backend.to_numpy(a), dtype=new_dtype)
                       for n, a in self.params.items()}
        if new_backend is not self.backend:
            self._dropout_rng = new_backend.rng(None)
        self.backend, self.dtype, self._cache = new_backend, new_dtype, None
        return self

    # --- I/O facades -----------------------------------------------------------------------
    def save(self, path):
        """Write weights, config and preprocessing to npvit's .npz at ``path`` (see npvit.formats)."""
        from ..formats.native import save
        return save(self, path)

    def predict(self, images, topk: int = 5, labels=None, batch_size: int = 32, preprocess=None):
        """Top-k (label, probability) pairs for image files, PIL images or arrays (npvit.predict)."""
        from ..predict import predict
        return predict(self, images, topk=topk, labels=labels, batch_size=batch_size, preprocess=preprocess)

    # --- forward and backward ----------------------------------------------------------------
    def __call__(self, x, **kwargs):
        return self.forward(x, **kwargs)

    def forward(self, x, train: bool = False, grad: bool = False, rng=None, observer=None):
        """The model's output for images ``x`` (B, C, H, W).

        ``train=True`` turns dropout/drop path on, drawing masks from ``rng`` (an int seed or a
        generator of this backend; default: the model's own generator).  ``grad=True`` keeps what
        ``backward`` needs.  ``observer`` (``npvit.model.observe.Observer``) is shown attention
        probabilities and block outputs as they are made, and their gradients in the backward.
        """
        x = self._check_input(x)
        run = self._pass(train, grad, rng, observer)
        with self.backend.blas_limit(1):           # see Backend.blas_limit
            out, cache = self._forward(x, run)
        self._cache = cache
        return out

    def backward(self, dout, input_grad: bool = True) -> Tuple[Any, Dict[str, Any]]:
        """Gradients of the last ``forward(..., grad=True)``: returns ``(dx, grads)``.

        ``dout`` has the shape of what forward returned.  ``grads`` maps every state-dict name to
        its gradient, in state-dict order.  ``input_grad=False`` skips the image gradient (``dx``
        is then None), as PyTorch does for inputs that do not require grad: training never needs
        it, and it costs one GEMM the size of the patch embedding.
        """
        cache = self._cache
        if cache is None:
            raise RuntimeError("backward() needs the caches of a forward pass: call "
                               "model.forward(x, grad=True) first (each forward keeps only its own)")
        # One backward per forward, as in PyTorch without retain_graph; caches are dropped as the
        # backward goes, so activations are freed while the gradients accumulate.
        self._cache = None
        with self.backend.blas_limit(1):           # see Backend.blas_limit
            dx, grads = self._backward(dout, cache, input_grad)
        return dx, {n: grads[n] for n in self.params}

    def _pass(self, train, grad, rng=None, observer=None) -> Pass:
        """How a forward runs: the fused eval kernels when nothing is kept and nothing dropped."""
        self.backend.prepare_memory()
        rng = self._resolve_rng(rng) if train else None
        fused = self.fast_inference and not train and not grad
        return Pass(self.backend, train=train, rng=rng, grad=grad, fused=fused, memo={}, observer=observer)

    def _map_images(self, features, x, run):
        """``features(images, run)`` over the batch as the backend shares it out (on NumPy: each
        thread whole images), concatenated in order.  For fused eval passes only: dropout masks
        and caches must not depend on how the batch was split.  An observer is forked for each
        share and joined afterwards (model/observe.py), or, if it cannot be, sees the batch whole."""
        obs = run.observer
        if obs is not None and obs.fork() is None:
            return features(x, run)

        def share(lo, hi):
            sub = obs.fork() if obs is not None else None
            return features(x[lo:hi], run._replace(observer=sub)), sub

        parts = self.backend.map_batch(share, x.shape[0], self._rows_per_image())
        if obs is not None:
            obs.join([sub for _, sub in parts], self.backend.xp)
        out = [h for h, _ in parts]
        return out[0] if len(out) == 1 else self.backend.xp.concatenate(out)

    def _eval_features(self, x, observer=None):
        """Final-norm token features of an eval pass (the fused schedule where the model allows it)."""
        x, run = self._check_input(x), self._pass(train=False, grad=False, observer=observer)
        if run.fused:
            return self._map_images(lambda images, r: self._features(images, r)[0], x, run)
        return self._features(x, run)[0]

    # --- seeing inside ------------------------------------------------------------------------
    def attention_maps(self, x, layers=None) -> list:
        """Post-softmax attention probabilities of the selected blocks, in block order: one
        (B, heads, N, N) array per ViT block (Hugging Face's ``output_attentions``), one
        (B, windows, heads, n, n) array per Swin block.  ``layers``: None (every block), an index
        or a list of indices (negative from the end) into all blocks, counted through the stages:
        a ViT-B/16 at batch 32 holds 12 x 716 MB of maps for all blocks, so ask for the ones you need."""
        from .observe import Recorder

        prefixes = self._attention_prefixes()
        chosen = [prefixes[i] for i in _take_indices(len(prefixes), [layers] if isinstance(layers, int) else layers)]
        rec = Recorder(prefixes=chosen)
        self.forward(x, observer=rec)
        return [rec.probs[p] for p in chosen]

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised head for ``num_classes`` classes (0: no head, ``forward``
        returns pooled features), as timm's ``reset_classifier``; label names are dropped."""
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        old = self.config.parameter_shapes()
        self.config = self.config.replace(num_classes=int(num_classes), label_names=None)
        new = self.config.parameter_shapes()
        fresh = {n: s for n, s in new.items() if n not in old or tuple(old[n]) != tuple(s)}
        params = {n: v for n, v in self.params.items() if n in new and n not in fresh}
        params.update({n: self.backend.from_numpy(a, dtype=self.dtype)
                       for n, a in init_params(fresh, 0, self.dtype, self.init_std)})
        self.params = {n: params[n] for n in new}
        self._cache = None
        self._build()

    def _attention_prefixes(self) -> list:
        """The parameter prefix of every attention, in block order."""
        raise NotImplementedError

    def _resolve_rng(self, rng):
        if rng is None:
            return self._dropout_rng
        if isinstance(rng, (int, np.integer)):
            return self.backend.rng(int(rng))
        return rng

    def _check_grad(self, g, shape):
        g = self.backend.asarray(g)
        if shape is not None and tuple(g.shape) != tuple(shape):
            raise ValueError(f"gradient has shape {tuple(g.shape)}, expected {tuple(shape)}")
        return g.astype(self.dtype, copy=False)

    def _check_features(self, h, shape):
        """Features handed to ``forward_head``: this backend's floats of ``shape`` (None: any)."""
        h = self.backend.asarray(h)
        if h.ndim != len(shape) or any(want is not None and got != want for got, want in zip(h.shape, shape)):
            want = tuple("B" if s is None else s for s in shape)
            raise ValueError(f"forward_head expects features of shape {want} (what forward_features "
                             f"returns), got {tuple(h.shape)}")
        return h.astype(self.dtype, copy=False)

    def _check_input(self, x):
        """Validate images (B, C, H, W); every failure says what was expected and how to fix it."""
        cfg = self.config
        if isinstance(x, (list, tuple)) or not hasattr(x, "shape"):
            raise TypeError(f"expected an array of images (B, C, H, W), got {type(x).__name__}; "
                            "for image files or PIL images use model.predict(...)")
        x = self.backend.asarray(x)
        if x.ndim != 4:
            hint = " (one image? add a batch axis: x[None])" if x.ndim == 3 else ""
            raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(x.shape)}{hint}")
        B, C, H, W = x.shape
        if C != cfg.in_c:
            hint = " (channels last? use x.transpose(0, 3, 1, 2))" if W == cfg.in_c else ""
            raise ValueError(f"expected {cfg.in_c} channels, got {C} (shape {tuple(x.shape)}){hint}")
        if (H, W) != tuple(cfg.img_size):
            raise ValueError(
                f"expected {cfg.img_size[0]}x{cfg.img_size[1]} images, got {H}x{W}: resize them "
                f"(model.predict does), or build/load the model with img_size=({H}, {W}) "
                f"{self._resize_hint}")
        if x.dtype.kind not in "f":
            raise TypeError(
                f"expected floating-point, normalised pixels, got dtype {x.dtype}: convert and "
                "normalise first, or pass raw images to model.predict(...), which does it")
        if not bool(self.backend.xp.isfinite(x).all()):
            raise ValueError("input contains NaN or inf values")
        return x.astype(self.dtype, copy=False)

    _resize_hint = "to resample its position embedding"

    def __repr__(self):
        c = self.config
        shown = ", ".join(f"{k}={getattr(c, k)}" for k in self._repr_fields)
        return (f"{type(self).__name__}({shown}, num_classes={c.num_classes}, dtype={self.dtype}, "
                f"backend={self.backend.name}, params={self.num_params():,})")

    _repr_fields = ()

    # --- what an architecture provides ---------------------------------------------------------
    def _build(self):
        """Make the architecture's layers (blocks) from ``self.config``."""
        raise NotImplementedError

    def _forward(self, x, run: Pass):
        raise NotImplementedError

    def _backward(self, dout, cache, input_grad):
        raise NotImplementedError

    def _tokens_per_image(self) -> int:
        raise NotImplementedError

    def _rows_per_image(self) -> int:
        """The rows one image adds to a typical product of an eval pass (how ``map_batch`` sizes a
        thread's groups of images): every block's token count for a ViT."""
        return self._tokens_per_image()


def _take_indices(n, indices):
    """Absolute block indices as timm's ``feature_take_indices``: None -> all; an int -> the last
    n; a sequence -> those indices, negative ones counted from the end.  Sorted, each once: timm
    collects the outputs as the blocks run, so ``indices=[-1, 0]`` gives block 0 then the last."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise ValueError(f"last-n indices ({indices}) must be between 1 and {n}")
        return list(range(n - indices, n))
    taken = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"indices must be integers, got {i!r}")
        j = n + i if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f"index {i} is out of range for {n} blocks (0 to {n - 1}, or negative from the end)")
        taken.append(int(j))
    return sorted(set(taken))


def _host_array(value):
    """A NumPy array from a host array-like (NumPy, lists, PyTorch CPU tensors via __array__)."""
    if hasattr(value, "detach"):  # a torch tensor: read it without importing torch
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"expected a numeric array, got dtype {arr.dtype}")
    return arr

