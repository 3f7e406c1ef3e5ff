"""Seeing what a ViT looks at: attention rollout, gradient x attention, input gradients.

    rollout(model, x)              (B, gh, gw)  Abnar & Zuidema (2020): attention alone, no class
    gradient_attention(model, x)   (B, gh, gw)  Chefer et al. (ICCV 2021): attention weighted by
                                                the target logit's gradient, class-specific
    input_gradients(model, x)      (B, C, H, W) d target logit / d input pixels (plain saliency);
                                                ``saliency_map`` reduces it to (B, H, W)
    overlay(picture, heat)         (h, w, 3)    a map over the picture at its own size, in
                                                ``colormap``'s colours (what ``npvit explain`` writes)

Rollout, per block in forward order (probabilities A (B, H, N, N) from the model's Observer):

    F  = fuse_heads(A)               mean, max or min over the heads            (B, N, N)
    F[drop] = 0                      with discard_ratio r: the k = int(r N^2) lowest entries of each
                                     image's F (ties: the lower flat index first, a stable sort),
                                     except the prefix tokens' own entries F[p, p] (class,
                                     distillation), which stay even when among the k: k or fewer
                                     are dropped, as jacobgil/vit-explain does (there for image 0
                                     only, here per image)
    A' = (0.5 F + 0.5 I) / rowsum    rows renormalised (summed over the last axis, keepdims)
    R  = A' R                        R starts as I; only R (B, N, N) is kept between blocks

Gradient x attention (R starts as I; dA = d logit_target / d A from npvit's own backward, which
shows the blocks last first: the fused maps are kept and applied in forward order):

    R  = R + mean_heads(relu(dA * A)) R                                          no renormalisation

Both return a relevance row over the patch tokens, reshaped to the patch grid and not rescaled:
the class token's row R[0, P:] for a class-token model; for a distilled model (whose output is
the mean of its class and distillation heads) the mean of the two rows (R[0, P:] + R[1, P:]) / 2;
for a ``gap`` model (no prefix token, the head reads the mean of all tokens) the mean of all N
rows.  They need global attention over a patch grid (ViT, DeiT): a Swin Transformer attends within
windows, and asking is a TypeError that names ``input_gradients``, which works for every model.

Targets: ``target=None`` explains the class with the largest logit of each image; an int explains
that class for every image; a sequence gives one class per image.  Maps are arrays of the model's
backend and dtype.  Inputs are what ``model.forward`` takes: normalised (B, C, H, W) images.
"""
import numpy as np

from .model.observe import Observer

HEAD_FUSIONS = ("mean", "max", "min")


# --- public API -------------------------------------------------------------------------------
def rollout(model, x, head_fusion="mean", discard_ratio=0.0):
    """Attention rollout (B, gh, gw) of a ViT for images ``x`` (B, C, H, W); see the module doc.

    ``head_fusion``: "mean", "max" or "min" over the heads.  ``discard_ratio`` in [0, 1): the
    fraction of each fused (N, N) map, per image, set to zero before the identity is added (the
    lowest entries; never a prefix token's own entry).  One observed forward (eval mode); the
    maps are folded into R block by block, never all held at once."""
    _require_global_attention(model, "rollout")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    obs = _RolloutObserver(model.backend.xp, head_fusion, float(discard_ratio),
                           spared=range(model.config.num_prefix_tokens))
    model.forward(x, observer=obs)
    return _relevance_grid(model, obs.R)


def gradient_attention(model, x, target=None):
    """Chefer et al.'s gradient x attention relevance (B, gh, gw) of a ViT for images ``x``.

    One forward with ``grad=True`` and one ``model.backward`` of the one-hot target (the backward
    computes the parameter gradients too: npvit's backward has no switch for them).  ``target``:
    None (each image's top class), an int, or one class per image.  For a distilled model the
    target logit is the eval output's, the mean of the two heads, and the map the mean of the
    class and distillation rows."""
    _require_global_attention(model, "gradient_attention")
    x, classes = _checked(model, x, target)
    xp = model.backend.xp
    obs = _GradientObserver(xp)
    logits = model.forward(x, grad=True, observer=obs)
    model.backward(_one_hot(model, logits, classes), input_grad=False)
    R = None
    for prefix in model._attention_prefixes():              # forward order; the hook came last first
        fused = obs.fused.pop(prefix)                       # (B, N, N)
        if R is None:
            B, N, _ = fused.shape
            R = xp.broadcast_to(xp.eye(N, dtype=fused.dtype), (B, N, N)).copy()
        R += fused @ R
    return _relevance_grid(model, R)


def input_gradients(model, x, target=None):
    """The gradient (B, C, H, W) of the target logit with respect to the input images ``x`` (the
    normalised pixels the model reads): plain saliency (Simonyan et al. 2014).  Works for every
    model, Swin included.  ``target`` as in ``gradient_attention``."""
    x, classes = _checked(model, x, target)
    logits = model.forward(x, grad=True)
    dx, _ = model.backward(_one_hot(model, logits, classes), input_grad=True)
    return dx


def saliency_map(gradients):
    """(B, H, W): the largest |gradient| over the channels of ``input_gradients``' (B, C, H, W),
    the usual way to show it (Simonyan et al.)."""
    return abs(gradients).max(axis=1)


# --- observers ----------------------------------------------------------------------------------
class _RolloutObserver(Observer):
    """Folds each block's fused, discarded, identity-mixed map into R as the forward goes; each
    thread's share of the batch folds its own (``fork``), joined in image order."""

    def __init__(self, xp, head_fusion, discard_ratio, spared):
        self.xp, self.head_fusion, self.discard_ratio = xp, head_fusion, discard_ratio
        self.spared = list(spared)
        self.R = None

    def wants_attention(self, prefix):
        return True

    def attention(self, prefix, probs):
        xp = self.xp
        fused = getattr(probs, self.head_fusion)(axis=1)                       # (B, N, N), a new array
        B, N, _ = fused.shape
        k = int(N * N * self.discard_ratio)
        if k:
            flat = fused.reshape(B, N * N)                                     # a view: fused is contiguous
            lowest = xp.argsort(flat, axis=1, kind="stable")[:, :k]            # (B, k)
            drop = xp.zeros((B, N * N), dtype=bool)
            drop[xp.arange(B)[:, None], lowest] = True
            for p in self.spared:                                              # a prefix token's own entry
                drop[:, p * N + p] = False
            flat[drop] = 0
        eye = xp.eye(N, dtype=fused.dtype)
        a = 0.5 * fused + 0.5 * eye
        a /= a.sum(axis=-1, keepdims=True)
        self.R = a if self.R is None else a @ self.R

    def fork(self):
        return _RolloutObserver(self.xp, self.head_fusion, self.discard_ratio, self.spared)

    def join(self, forks, xp):
        self.R = xp.concatenate([f.R for f in forks])


class _GradientObserver(Observer):
    """Keeps mean_heads(relu(dA * A)) (B, N, N) per block as the backward shows them."""

    def __init__(self, xp):
        self.xp, self.fused = xp, {}

    def wants_attention(self, prefix):
        return True      # so that the block keeps this observer for its backward

    def attention_grad(self, prefix, probs, dprobs):
        g = dprobs * probs                                                     # (B, H, N, N)
        self.xp.maximum(g, 0, out=g)
        self.fused[prefix] = g.mean(axis=1)


# --- helpers ------------------------------------------------------------------------------------
def _require_global_attention(model, name):
    from .model.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(f"{name} is defined for global attention over a patch grid (ViT, DeiT); "
                        f"a {type(model).__name__} attends within windows: use "
                        "npvit.explain.input_gradients(model, x) (npvit explain --method saliency), "
                        "which works for every model")


def _checked(model, x, target):
    """(checked images, the target classes (B,) NumPy int64 or None for each image's top class),
    before any work is done: a bad target fails fast."""
    if not getattr(model.config, "num_classes", 0):
        raise ValueError("explaining a class needs a classification head: this model has "
                         "num_classes=0 (it returns pooled features)")
    x = model._check_input(x)
    if target is None:
        return x, None
    B, K = x.shape[0], model.config.num_classes
    t = np.asarray(target)
    if t.dtype == bool or t.dtype.kind not in "iu":
        raise TypeError(f"target must be a class index (int) or one per image, got {target!r}")
    t = np.broadcast_to(t, (B,)) if t.ndim == 0 else t
    if t.shape != (B,):
        raise ValueError(f"target holds {t.size} classes for {B} images: pass one int, or one per image")
    if t.min() < 0 or t.max() >= K:
        raise ValueError(f"target class {int(t.min() if t.min() < 0 else t.max())} is out of range "
                         f"for {K} classes (0 to {K - 1})")
    return x, t.astype(np.int64)


def _one_hot(model, logits, classes):
    """The one-hot (B, K) gradient that picks each image's target logit (None: its largest)."""
    if classes is None:
        classes = np.asarray(model.backend.to_numpy(logits)).argmax(axis=1)
    B, K = classes.shape[0], logits.shape[1]
    onehot = np.zeros((B, K), dtype=model.dtype)
    onehot[np.arange(B), classes] = 1
    return model.backend.from_numpy(onehot, dtype=model.dtype)


def _relevance_grid(model, R):
    """The relevance row over the patch tokens (see the module doc), as (B, gh, gw)."""
    cfg = model.config
    P, (gh, gw) = cfg.num_prefix_tokens, cfg.grid_size
    if cfg.distilled:
        row = (R[:, 0, P:] + R[:, 1, P:]) / 2
    elif cfg.classifier == "token":
        row = R[:, 0, P:]
    else:                                                                       # gap: every token row
        row = R.mean(axis=1)
    return model.backend.xp.ascontiguousarray(row.reshape(R.shape[0], gh, gw))


# --- pictures -----------------------------------------------------------------------------------
# Five of matplotlib's 256 "inferno" colours (entries 0, 64, 128, 192, 255: black, purple, red,
# orange, pale yellow), linear in between: brightness rises with the value, in colour or in grey.
_INFERNO = np.array([[0.001462, 0.000466, 0.013866], [0.341500, 0.062325, 0.429425],
                     [0.735683, 0.215906, 0.330245], [0.978422, 0.557937, 0.034931],
                     [0.988362, 0.998364, 0.644924]])


def colormap(values):
    """RGB colours (..., 3) in [0, 1] for values in [0, 1] (clipped; NaN shows as 0)."""
    v = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0), nan=0.0)
    pos = v * (len(_INFERNO) - 1)
    i = np.minimum(pos.astype(np.int64), len(_INFERNO) - 2)
    t = (pos - i)[..., None]
    return _INFERNO[i] * (1 - t) + _INFERNO[i + 1] * t


def to_unit(heat):
    """``heat`` rescaled to [0, 1] by its own minimum and maximum (all zeros if it is constant)."""
    h = np.asarray(heat, dtype=np.float64)
    lo, hi = h.min(), h.max()
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def overlay(picture, heat, alpha=0.5, preprocess=None):
    """The picture (h, w, 3) uint8 with ``heat`` laid over it in ``colormap``'s colours.

    ``picture``: what the model was shown, before preprocessing (a path, a PIL image or an array,
    as ``model.predict`` takes).  ``heat``: a 2-D map over the model's input (a patch grid from
    ``rollout``/``gradient_attention`` or a pixel map from ``saliency_map``), rescaled by
    ``to_unit``, stretched bilinearly (Pillow's) onto the part of the picture the model saw and
    mixed in as ``(1 - alpha) * picture + alpha * colour``.  ``preprocess``: the
    ``PreprocessConfig`` that made the input (``model.preprocess``): where it center-crops, the
    cut-off border keeps its own colours; None means the whole picture was squashed in."""
    from .preprocess.images import to_rgb
    from .preprocess.resize import resize
    from .preprocess.transform import resized_size

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    heat = np.asarray(heat)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heat must be a 2-D map (rows, columns), got shape {heat.shape}")
    rgb = to_rgb(picture)
    pic = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    h, w = pic.shape[:2]
    y0, y1, x0, x1 = 0, h, 0, w
    if preprocess is not None:                       # the crop window, in the picture's pixels
        (rh, rw), (sh, sw) = resized_size(h, w, preprocess), preprocess.input_size
        top, left = int(round((rh - sh) / 2.0)), int(round((rw - sw) / 2.0))
        y0, y1 = round(top * h / rh), round((top + sh) * h / rh)
        x0, x1 = round(left * w / rw), round((left + sw) * w / rw)
    if y1 > y0 and x1 > x0:
        unit = resize(to_unit(heat).astype(np.float32)[..., None], (y1 - y0, x1 - x0), "bilinear")[..., 0]
        region = pic[y0:y1, x0:x1]
        pic[y0:y1, x0:x1] = (1 - alpha) * region + alpha * colormap(unit)
    return np.clip(np.rint(pic * 255.0), 0, 255).astype(np.uint8)
