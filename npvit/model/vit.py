"""VisionTransformer: parameters in a dict under PyTorch's names, forward and a hand-written backward.

Forward (pre-norm encoder, as in the seed, timm and the official code):

    x (B, C, H, W) -> patch embed (B, P, D) -> [cls, dist] + pos_embed -> dropout
      -> depth x Block -> LayerNorm -> pool (token 0, or mean for 'gap')
      -> [pre_logits: Linear + tanh] -> head Linear          (B, num_classes)

    Block:  h = h + drop_path(dropout(proj(attention(qkv(norm1(h))))))
            h = h + drop_path(dropout(fc2(dropout(gelu(fc1(norm2(h)))))))

``forward(x, grad=True)`` keeps each op's cache in ``self._caches``; ``backward(dlogits)`` walks the
same steps in reverse and returns the input gradient and a dict of parameter gradients keyed like
``state_dict()``.
"""
import numpy as np

from ..backends import array_library_of, get_backend
from ..ops.activations import gelu_backward, gelu_forward, tanh_backward, tanh_forward
from ..ops.attention import attention_backward, attention_forward
from ..ops.dropout import drop_path_backward, drop_path_forward, dropout_backward, dropout_forward
from ..ops.layernorm import layernorm_backward, layernorm_forward
from ..ops.linear import linear_backward, linear_forward
from ..ops.patch_embed import patch_embed_backward, patch_embed_forward
from ..ops.tokens import tokens_backward, tokens_forward
from .config import ViTConfig
from .init import init_params

DTYPES = ("float32", "float64")


def parameter_shapes(cfg):
    """{state-dict name: shape}, in timm's order; the single source of the model's parameters."""
    D, (ph, pw), hidden = cfg.embed_dim, cfg.patch_size, cfg.mlp_hidden
    shapes = {}
    if cfg.classifier == "token":
        shapes["cls_token"] = (1, 1, D)
    if cfg.distilled:
        shapes["dist_token"] = (1, 1, D)
    shapes["pos_embed"] = (1, cfg.num_patches + cfg.num_prefix_tokens, D)
    shapes["patch_embed.proj.weight"] = (D, cfg.in_c, ph, pw)
    shapes["patch_embed.proj.bias"] = (D,)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes[b + "norm1.weight"] = (D,)
        shapes[b + "norm1.bias"] = (D,)
        shapes[b + "attn.qkv.weight"] = (3 * D, D)
        if cfg.qkv_bias:
            shapes[b + "attn.qkv.bias"] = (3 * D,)
        shapes[b + "attn.proj.weight"] = (D, D)
        shapes[b + "attn.proj.bias"] = (D,)
        shapes[b + "norm2.weight"] = (D,)
        shapes[b + "norm2.bias"] = (D,)
        shapes[b + "mlp.fc1.weight"] = (hidden, D)
        shapes[b + "mlp.fc1.bias"] = (hidden,)
        shapes[b + "mlp.fc2.weight"] = (D, hidden)
        shapes[b + "mlp.fc2.bias"] = (D,)
    shapes["norm.weight"] = (D,)
    shapes["norm.bias"] = (D,)
    if cfg.representation_size:
        shapes["pre_logits.fc.weight"] = (cfg.representation_size, D)
        shapes["pre_logits.fc.bias"] = (cfg.representation_size,)
    if cfg.num_classes:
        shapes["head.weight"] = (cfg.num_classes, cfg.num_features)
        shapes["head.bias"] = (cfg.num_classes,)
        if cfg.distilled:
            shapes["head_dist.weight"] = (cfg.num_classes, D)
            shapes["head_dist.bias"] = (cfg.num_classes,)
    return shapes


class VisionTransformer:
    def __init__(self, config=None, dtype="float32", backend="numpy", seed=0, **overrides):
        cfg = config if config is not None else ViTConfig()
        self._setup(cfg.replace(**overrides) if overrides else cfg, dtype, backend, seed)
        self.params = {n: self.backend.from_numpy(a, dtype=self.dtype)
                       for n, a in init_params(parameter_shapes(self.config), seed, self.dtype)}

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
        self._caches = None
        # Eval forwards on NumPy take the fused, multi-threaded path in inference.py; set False to run
        # the op-by-op reference path (the two agree to float rounding: tests/test_inference.py).
        self.fast_inference = True

    # --- parameters ----------------------------------------------------------------------
    def state_dict(self):
        """{timm parameter name: array}; the arrays are the model's own (as in PyTorch)."""
        return dict(self.params)

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the model; names and shapes must match (all listed in one error).

        With ``strict=False`` missing and unexpected names are allowed and returned as
        ``(missing, unexpected)``; a shape mismatch is always an error.
        """
        expected = parameter_shapes(self.config)
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
                             + " (check the model config: depth, embed_dim, num_classes, ...)")
        loaded = {}
        for name in expected:
            if name in state_dict:
                loaded[name] = self._to_param(state_dict[name], name)
        self.params.update(loaded)  # only after every array converted: never half-loaded
        return missing, unexpected

    def _to_param(self, value, name):
        if array_library_of(value) == self.backend.name:
            arr = self.backend.xp.asarray(value, dtype=self.dtype)
        else:
            arr = self.backend.from_numpy(_host_array(value), dtype=self.dtype)
        if not bool(self.backend.xp.isfinite(arr).all()):
            raise ValueError(f"parameter {name} holds NaN or inf values")
        return arr.copy() if arr is value else arr

    def save(self, path):
        """Write weights, config and preprocessing to npvit's .npz at ``path`` (see npvit.formats)."""
        from ..formats.native import save
        return save(self, path)

    def predict(self, images, topk=5, labels=None, batch_size=32, preprocess=None):
        """Top-k (label, probability) pairs for image files, PIL images or arrays (npvit.predict)."""
        from ..predict import predict
        return predict(self, images, topk=topk, labels=labels, batch_size=batch_size, preprocess=preprocess)

    def num_params(self):
        return int(sum(int(np.prod(a.shape)) for a in self.params.values()))

    def to(self, backend=None, dtype=None):
        """Move the model to another backend and/or dtype, in place; returns the model."""
        new_backend = get_backend(backend) if backend is not None else self.backend
        if dtype is not None and str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        new_dtype = str(dtype) if dtype is not None else self.dtype
        self.params = {n: new_backend.from_numpy(self.backend.to_numpy(a), dtype=new_dtype)
                       for n, a in self.params.items()}
        if new_backend is not self.backend:
            self._dropout_rng = new_backend.rng(None)
        self.backend, self.dtype, self._caches = new_backend, new_dtype, None
        return self

    # --- forward -------------------------------------------------------------------------
    def __call__(self, x, **kwargs):
        return self.forward(x, **kwargs)

    def forward(self, x, train=False, grad=False, rng=None):
        """Logits for images ``x`` (B, C, H, W).

        ``train=True`` turns dropout/drop path on, drawing masks from ``rng`` (an int seed or a
        generator of this backend; default: the model's own generator).  ``grad=True`` keeps what
        ``backward`` needs.  A distilled model in training returns ``(logits, logits_dist)``;
        otherwise their mean.
        """
        x = self._check_input(x)
        rng = self._resolve_rng(rng) if train else None
        caches = {} if grad else None
        # A token-pooling head reads only the prefix tokens (class, distillation): the fast path
        # may then return just those (the pooling below reads h[:, 0] and h[:, 1] either way).
        prefix_only = self.config.classifier == "token"
        out = self._forward_head(self._features(x, rng, caches, prefix_only), train, caches)
        self._caches = caches
        return out

    def forward_features(self, x):
        """Final-norm token features (B, N, D) in eval mode (no head, no pooling)."""
        return self._features(self._check_input(x), None, None)

    def _features(self, x, rng, caches, prefix_only=False):
        """Token features: the fast NumPy path when nothing is kept and nothing is dropped, else the
        op-by-op reference path (which keeps caches for backward).  ``prefix_only`` allows the
        fast path to return the prefix tokens alone."""
        self.backend.prepare_memory()
        if self.fast_inference and rng is None and caches is None and self.backend.name == "numpy":
            from .inference import InferenceEngine

            return InferenceEngine(self).features(x, prefix_only)
        return self._forward_features(x, rng, caches)

    def _forward_features(self, x, rng, caches):
        cfg, p = self.config, self.params
        keep = caches.__setitem__ if caches is not None else (lambda k, v: None)
        h, c = patch_embed_forward(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], self.backend)
        keep("patch_embed", c)                                               # (B, P, D)
        h, c = tokens_forward(h, p.get("cls_token"), p.get("dist_token"), p["pos_embed"], self.backend)
        keep("tokens", c)                                                    # (B, N, D)
        h, c = dropout_forward(h, cfg.drop_ratio, rng, self.backend)
        keep("pos_drop", c)
        for i in range(cfg.depth):
            h = self._block_forward(i, h, rng, keep, caches is not None)
        h, c = layernorm_forward(h, p["norm.weight"], p["norm.bias"], cfg.norm_eps, self.backend)
        keep("norm", c)
        return h

    def _block_forward(self, i, h, rng, keep, grad):
        cfg, p, b = self.config, self.params, f"blocks.{i}."
        drop_path = self._drop_path_rate(i)
        # attention branch
        a, c = layernorm_forward(h, p[b + "norm1.weight"], p[b + "norm1.bias"], cfg.norm_eps, self.backend)
        keep(b + "norm1", c)
        a, c = linear_forward(a, p[b + "attn.qkv.weight"], p.get(b + "attn.qkv.bias"), self.backend)
        keep(b + "attn.qkv", c)                                              # (B, N, 3D)
        a, c = attention_forward(a, cfg.num_heads, cfg.scale, self.backend, cfg.attn_drop_ratio, rng)
        keep(b + "attn", c)                                                  # (B, N, D)
        a, c = linear_forward(a, p[b + "attn.proj.weight"], p[b + "attn.proj.bias"], self.backend)
        keep(b + "attn.proj", c)
        a, c = dropout_forward(a, cfg.drop_ratio, rng, self.backend)
        keep(b + "attn.proj_drop", c)
        a, c = drop_path_forward(a, drop_path, rng, self.backend)
        keep(b + "drop_path1", c)
        h = self._residual_add(h, a)
        # MLP branch
        m, c = layernorm_forward(h, p[b + "norm2.weight"], p[b + "norm2.bias"], cfg.norm_eps, self.backend)
        keep(b + "norm2", c)
        m, c = linear_forward(m, p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"], self.backend)
        keep(b + "mlp.fc1", c)                                               # (B, N, hidden)
        m, c = gelu_forward(m, cfg.gelu, self.backend, keep_grad=grad)
        keep(b + "mlp.act", c)
        m, c = dropout_forward(m, cfg.drop_ratio, rng, self.backend)
        keep(b + "mlp.drop1", c)
        m, c = linear_forward(m, p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"], self.backend)
        keep(b + "mlp.fc2", c)
        m, c = dropout_forward(m, cfg.drop_ratio, rng, self.backend)
        keep(b + "mlp.drop2", c)
        m, c = drop_path_forward(m, drop_path, rng, self.backend)
        keep(b + "drop_path2", c)
        return self._residual_add(h, m)

    def _forward_head(self, h, train, caches):
        cfg, p = self.config, self.params
        keep = caches.__setitem__ if caches is not None else (lambda k, v: None)
        if cfg.distilled:
            logits, c = linear_forward(h[:, 0], p["head.weight"], p["head.bias"], self.backend)
            keep("head", c)
            logits_dist, c = linear_forward(h[:, 1], p["head_dist.weight"], p["head_dist.bias"], self.backend)
            keep("head_dist", c)
            keep("distilled_train", train)
            return (logits, logits_dist) if train else (logits + logits_dist) / 2
        pooled = h[:, 0] if cfg.classifier == "token" else h.mean(axis=1)   # (B, D)
        keep("pool_tokens", h.shape[1])
        if cfg.representation_size:
            pooled, c = linear_forward(pooled, p["pre_logits.fc.weight"], p["pre_logits.fc.bias"], self.backend)
            keep("pre_logits.fc", c)
            pooled, c = tanh_forward(pooled, self.backend)
            keep("pre_logits.act", c)
        if not cfg.num_classes:
            return pooled
        logits, c = linear_forward(pooled, p["head.weight"], p["head.bias"], self.backend)
        keep("head", c)
        return logits

    # --- backward ------------------------------------------------------------------------
    def backward(self, dlogits, input_grad=True):
        """Gradients of the last ``forward(..., grad=True)``: returns ``(dx, grads)``.

        ``dlogits`` has the shape of what forward returned (a pair for a distilled model in
        training).  ``grads`` maps every state-dict name to its gradient.  ``input_grad=False``
        skips the image gradient (``dx`` is then None), as PyTorch does for inputs that do not
        require grad: training never needs it, and it costs one GEMM the size of the patch embed.
        """
        caches = self._caches
        if caches is None:
            raise RuntimeError("backward() needs the caches of a forward pass: call "
                               "model.forward(x, grad=True) first (each forward keeps only its own)")
        # One backward per forward, as in PyTorch without retain_graph; each cache is popped once
        # used, so activations are freed while the gradients accumulate.
        self._caches = None
        cfg = self.config
        grads = {}
        dh = self._backward_head(dlogits, caches, grads)
        # final norm
        dh, grads["norm.weight"], grads["norm.bias"] = layernorm_backward(dh, caches.pop("norm"))
        for i in reversed(range(cfg.depth)):
            dh = self._block_backward(i, dh, caches, grads)
        dh = dropout_backward(dh, caches.pop("pos_drop"))
        dh, dcls, ddist, grads["pos_embed"] = tokens_backward(dh, caches.pop("tokens"))
        if dcls is not None:
            grads["cls_token"] = dcls
        if ddist is not None:
            grads["dist_token"] = ddist
        dx, grads["patch_embed.proj.weight"], grads["patch_embed.proj.bias"] = \
            patch_embed_backward(dh, caches.pop("patch_embed"), input_grad)
        return dx, {n: grads[n] for n in self.params}  # in state_dict order

    def _backward_head(self, dlogits, caches, grads):
        """Gradient of the token features (B, N, D) from the gradient of the output."""
        cfg, xp = self.config, self.backend.xp
        if cfg.distilled:
            head, head_dist = caches.pop("head"), caches.pop("head_dist")
            B, D = head.x.shape
            if caches.pop("distilled_train"):
                if not (isinstance(dlogits, (tuple, list)) and len(dlogits) == 2):
                    raise ValueError("a distilled model in training returned (logits, logits_dist): "
                                     "pass a pair (dlogits, dlogits_dist) to backward")
                dhead, ddist = (self._check_grad(g, (B, cfg.num_classes)) for g in dlogits)
            else:
                dhead = ddist = self._check_grad(dlogits, (B, cfg.num_classes)) / 2  # eval output was the mean
            d0, grads["head.weight"], grads["head.bias"] = linear_backward(dhead, head)
            d1, grads["head_dist.weight"], grads["head_dist.bias"] = linear_backward(ddist, head_dist)
            dh = xp.zeros((B, self._num_tokens(), D), dtype=d0.dtype)
            dh[:, 0] = d0
            dh[:, 1] = d1
            return dh
        dpooled = self._check_grad(dlogits, None)
        if cfg.num_classes:
            dpooled, grads["head.weight"], grads["head.bias"] = linear_backward(dpooled, caches.pop("head"))
        if cfg.representation_size:
            dpooled = tanh_backward(dpooled, caches.pop("pre_logits.act"))
            dpooled, grads["pre_logits.fc.weight"], grads["pre_logits.fc.bias"] = \
                linear_backward(dpooled, caches.pop("pre_logits.fc"))
        B, D, N = dpooled.shape[0], cfg.embed_dim, caches.pop("pool_tokens")
        if cfg.classifier == "token":
            dh = xp.zeros((B, N, D), dtype=dpooled.dtype)
            dh[:, 0] = dpooled
        else:
            dh = xp.broadcast_to((dpooled / N)[:, None, :], (B, N, D)).copy()
        return dh

    def _block_backward(self, i, dh, caches, grads):
        b = f"blocks.{i}."
        # MLP branch; dh reaches the block input both through the residual and the branch.
        dm = drop_path_backward(dh, caches.pop(b + "drop_path2"))
        dm = dropout_backward(dm, caches.pop(b + "mlp.drop2"))
        dm, grads[b + "mlp.fc2.weight"], grads[b + "mlp.fc2.bias"] = linear_backward(dm, caches.pop(b + "mlp.fc2"))
        dm = dropout_backward(dm, caches.pop(b + "mlp.drop1"))
        dm = gelu_backward(dm, caches.pop(b + "mlp.act"))
        dm, grads[b + "mlp.fc1.weight"], grads[b + "mlp.fc1.bias"] = linear_backward(dm, caches.pop(b + "mlp.fc1"))
        dm, grads[b + "norm2.weight"], grads[b + "norm2.bias"] = layernorm_backward(dm, caches.pop(b + "norm2"))
        dh = self._residual_add(dh, dm)                                      # residual: gradients sum
        # attention branch
        da = drop_path_backward(dh, caches.pop(b + "drop_path1"))
        da = dropout_backward(da, caches.pop(b + "attn.proj_drop"))
        da, grads[b + "attn.proj.weight"], grads[b + "attn.proj.bias"] = \
            linear_backward(da, caches.pop(b + "attn.proj"))
        da = attention_backward(da, caches.pop(b + "attn"))
        da, grads[b + "attn.qkv.weight"], dqkv_bias = linear_backward(da, caches.pop(b + "attn.qkv"))
        if self.config.qkv_bias:
            grads[b + "attn.qkv.bias"] = dqkv_bias
        da, grads[b + "norm1.weight"], grads[b + "norm1.bias"] = layernorm_backward(da, caches.pop(b + "norm1"))
        return self._residual_add(dh, da)                                    # residual: gradients sum

    # --- helpers -------------------------------------------------------------------------
    def _residual_add(self, h, branch):
        """h + branch, written into h on the backend's threads.  Safe in place: the residual stream
        (and its gradient) is referenced by nothing else once the branch has been computed (the
        caches keep LayerNorm's xhat, not its input), and forward's own input is never h here."""
        if not h.flags.c_contiguous:  # a reshape would copy, and the sum land in the copy
            return h + branch
        add = lambda h_, b_: self.backend.xp.add(h_, b_, out=h_)
        M = h.size // h.shape[-1]
        self.backend.rowwise(add, h.reshape(M, -1), branch.reshape(M, -1))
        return h

    def _num_tokens(self):
        return self.config.num_patches + self.config.num_prefix_tokens

    def _drop_path_rate(self, i):
        """Stochastic depth grows linearly from 0 (first block) to drop_path_ratio (last)."""
        depth = self.config.depth
        return self.config.drop_path_ratio * i / (depth - 1) if depth > 1 else 0.0

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
                f"(model.predict does), or build/load the model with img_size=({H}, {W}) to resample "
                "its position embedding")
        if x.dtype.kind not in "f":
            raise TypeError(
                f"expected floating-point, normalised pixels, got dtype {x.dtype}: convert and "
                "normalise first, or pass raw images to model.predict(...), which does it")
        if not bool(self.backend.xp.isfinite(x).all()):
            raise ValueError("input contains NaN or inf values")
        return x.astype(self.dtype, copy=False)

    def __repr__(self):
        c = self.config
        return (f"VisionTransformer(img_size={c.img_size}, patch_size={c.patch_size}, "
                f"embed_dim={c.embed_dim}, depth={c.depth}, num_heads={c.num_heads}, "
                f"num_classes={c.num_classes}, dtype={self.dtype}, backend={self.backend.name}, "
                f"params={self.num_params():,})")


def _host_array(value):
    """A NumPy array from a host array-like (NumPy, lists, PyTorch CPU tensors via __array__)."""
    if hasattr(value, "detach"):  # a torch tensor: read it without importing torch
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"expected a numeric array, got dtype {arr.dtype}")
    return arr
