"""``npvit.load(path, **overrides)``: any supported checkpoint -> a ready VisionTransformer or SwinTransformer.

    path -> detect.read_checkpoint -> Checkpoint (timm-named arrays + what the file says)
         -> config = shapes (infer.py) + file facts + origin defaults, then the user's overrides
         -> position embedding resampled if the grid changes, head replaced if num_classes does
         -> model.load_state_dict (every shape checked; NaN/inf refused) and model.preprocess

Override rules: settings the weights fix (width, depth, patch, ...) cannot be overridden; heads
recorded by the file cannot either; conventions (gelu, norm_eps, heads guessed from the width,
labels) can; ``img_size`` resamples the position embedding; ``num_classes`` replaces the head with a
freshly initialised one (with a warning, as timm does when fine-tuning).
"""
import dataclasses
import math
import os
import warnings
from typing import Any, Optional, Union

from ..model.config import ViTConfig
from ..model.init import init_params
from ..model.schema import parameter_shapes
from ..model.base import Model
from ..model.variants import model_class
from ..preprocess.config import PRESETS, PreprocessConfig, preset
from .checkpoint import CheckpointWarning, labels_for_head
from .detect import read_checkpoint
from .errors import CheckpointError
from .infer import STRUCTURAL, infer_structure, square_grid
from .resample import METHODS, resample_pos_embed
from .swin import build_swin

# Models shipped inside the package: name -> path relative to the ``npvit`` package folder
# (e.g. "digits": "data/digits_vit.npz"); ``npvit.load(name)`` finds them when no such file exists.
EMBEDDED = {"digits": "weights/digits.npz"}  # npvit/weights/__init__.py; trained by npvit (docs/training.md)

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ViTConfig)}


def load(path: Union[str, os.PathLike], *, dtype: Optional[str] = None, backend: str = "numpy",
         posemb_interpolation: Optional[str] = None, preprocess: Union[PreprocessConfig, str, None] = None,
         **overrides: Any) -> Model:
    """Load a ViT or Swin Transformer checkpoint of any supported format (detected from its content).

    ``path``: a checkpoint file, a Hugging Face / timm model folder, or an embedded model's name
    (``EMBEDDED``).  ``dtype``: "float32" or "float64" (default: what an npvit file was saved in,
    else float32); ``backend``: "numpy" or "cupy".
    ``overrides`` are ViTConfig settings (``img_size``, ``num_heads``, ``gelu``, ``num_classes``,
    ``norm_eps``, ...), or for a Swin checkpoint SwinConfig settings (``img_size``, ``window_size``
    -- its relative position tables are resampled as timm does --, ``num_classes``, ...).
    ``posemb_interpolation`` is one of "bicubic" (timm), "bilinear" (timm's
    npz path) or "linear_corners" (official code); the default follows the file's origin.
    ``preprocess`` is a PreprocessConfig or a preset name ("official", "timm", "deit", "hf",
    "torchvision", "seed"); the default follows the file's origin.

    Raises ``CheckpointError`` (a ValueError) for any file that is not a readable, consistent
    checkpoint, saying what was found; ``FileNotFoundError`` for a missing path; ``TypeError`` for
    an unknown setting.  Dropped or replaced parts are reported as ``CheckpointWarning``.
    """
    if posemb_interpolation is not None and posemb_interpolation not in METHODS:
        raise ValueError(f"posemb_interpolation must be one of {METHODS}, got {posemb_interpolation!r}")
    source = resolve_path(path)
    ckpt = read_checkpoint(source)
    for note in ckpt.notes:
        warnings.warn(f"{source}: {note}", CheckpointWarning, stacklevel=2)
    if ckpt.arch == "swin":
        cfg, state, img_size_changed = build_swin(ckpt, overrides, str(source))
    else:
        unknown = sorted(set(overrides) - _CONFIG_FIELDS)
        if unknown:
            raise TypeError(f"unknown model setting(s) {unknown}; known: {sorted(_CONFIG_FIELDS)}")
        cfg, state, img_size_changed = _build(ckpt, overrides, posemb_interpolation, str(source))
    model = _model_from_state(cfg, state, dtype or ckpt.dtype or "float32", backend)
    model.preprocess = _preprocess(ckpt, cfg, preprocess, img_size_changed)
    return model


def resolve_path(path):
    """An existing file or folder; else an embedded model's file; else a clear 'not found'."""
    p = os.fspath(path)
    if os.path.exists(p):
        return p
    if p in EMBEDDED:
        from importlib import resources  # ~40 ms to import: only when an embedded model is asked for

        return str(resources.files("npvit").joinpath(EMBEDDED[p]))
    names = f" (embedded models: {', '.join(sorted(EMBEDDED))})" if EMBEDDED else ""
    raise FileNotFoundError(f"no such checkpoint file or folder: {p!r}{names}")


def _build(ckpt, overrides, posemb_interpolation, source):
    """``(config, state, img_size_changed)`` from the file's arrays and facts plus the overrides."""
    fields, patches = infer_structure(ckpt.state, source)
    patch = fields["patch_size"]
    merged = {k: v for k, v in ckpt.defaults.items() if k not in STRUCTURAL and k != "img_size"}
    merged.update(fields)
    merged.update(ckpt.known)

    # The grid the weights were trained on: recorded by the file, else square, else the override.
    old_grid = None
    if ckpt.img_size is not None:
        g = (ckpt.img_size[0] // patch[0], ckpt.img_size[1] // patch[1])
        old_grid = g if g[0] * g[1] == patches else None
    old_grid = old_grid or square_grid(patches)
    if old_grid is None and "img_size" in overrides:
        g = ViTConfig(img_size=overrides["img_size"], patch_size=patch, embed_dim=1, num_heads=1).grid_size
        old_grid = g if g[0] * g[1] == patches else None
    if old_grid is None:
        raise CheckpointError(f"{source}: the position embedding has {patches} patch positions, not a "
                              f"square grid; pass img_size=(H, W) with (H/{patch[0]}) * (W/{patch[1]}) = {patches}")
    merged["img_size"] = (old_grid[0] * patch[0], old_grid[1] * patch[1])

    if "num_heads" not in merged and "num_heads" not in overrides:
        width = fields["embed_dim"]
        fits = ", ".join(f"{h} (head_dim {width // h})" for h in head_candidates(width))
        raise CheckpointError(
            f"{source}: the file does not record the number of attention heads and embed_dim="
            f"{width} is not a standard width (192, 384, 768, 1024, 1280), so npvit will not guess: "
            f"pass num_heads=N (npvit.load(path, num_heads=N), or --num-heads N). Head counts that "
            f"divide {width}: {fits}")
    if "num_heads" not in merged:
        merged["num_heads"] = overrides["num_heads"]
    merged["label_names"] = labels_for_head(merged.get("label_names"), fields["num_classes"], source)
    try:
        file_cfg = ViTConfig(**merged)
    except (ValueError, TypeError) as exc:
        if "num_heads" not in ckpt.known and "num_heads" in overrides:
            raise  # the user's own num_heads does not fit: not the file's fault
        raise CheckpointError(f"{source}: the weights and settings the file records do not make a "
                              f"ViT ({exc})") from None

    for k, v in overrides.items():
        if k in ckpt.known and file_cfg.replace(**{k: v}) != file_cfg:
            raise CheckpointError(f"{source}: {k}={v!r} contradicts the file, which has {k}="
                                  f"{getattr(file_cfg, k)!r}")
    head_changed = "num_classes" in overrides and overrides["num_classes"] != file_cfg.num_classes
    rep_dropped = ("representation_size" in overrides and overrides["representation_size"] is None
                   and file_cfg.representation_size is not None)
    changes = dict(overrides)
    if head_changed and "label_names" not in overrides:
        changes["label_names"] = None
    if rep_dropped:
        changes.pop("representation_size")
    cfg = file_cfg.replace(**changes)
    for k in STRUCTURAL:
        if k in ("num_classes", "representation_size"):
            continue
        if getattr(cfg, k) != getattr(file_cfg, k):
            raise CheckpointError(f"{source}: {k}={overrides.get(k)!r} does not fit these weights, "
                                  f"which have {k}={getattr(file_cfg, k)!r}")
    if cfg.representation_size != file_cfg.representation_size:
        raise CheckpointError(f"{source}: representation_size={cfg.representation_size!r} does not fit "
                              f"the weights ({file_cfg.representation_size!r}); only None (drop it) is allowed")

    state = dict(ckpt.state)
    if rep_dropped:
        if cfg.num_classes and not head_changed:
            raise CheckpointError(f"{source}: dropping the representation layer leaves the "
                                  f"{cfg.num_classes}-class head without the input it was trained on; "
                                  "also pass num_classes=N for a fresh head (or 0 for features)")
        state.pop("pre_logits.fc.weight"), state.pop("pre_logits.fc.bias")
        cfg = cfg.replace(representation_size=None)
        warnings.warn(f"{source}: dropped the representation layer (pre_logits)", CheckpointWarning,
                      stacklevel=3)
    if head_changed:
        state = _fresh_head(state, cfg, file_cfg, source)
    if tuple(cfg.img_size) != tuple(file_cfg.img_size):
        method = posemb_interpolation or ckpt.resample
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], file_cfg.grid_size, cfg.grid_size,
                                                cfg.num_prefix_tokens, method)
    return cfg, state, tuple(cfg.img_size) != tuple(file_cfg.img_size)


def _fresh_head(state, cfg, file_cfg, source):
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
    shapes = {k: s for k, s in parameter_shapes(cfg).items() if k.startswith(("head.", "head_dist."))}
    state.update(init_params(shapes, seed=0))
    if cfg.num_classes:
        warnings.warn(f"{source}: the file's {file_cfg.num_classes}-class head was replaced by a freshly "
                      f"initialised {cfg.num_classes}-class head (train it before use)",
                      CheckpointWarning, stacklevel=4)
    return state


def _model_from_state(cfg, state, dtype, backend):
    """The model ``cfg`` describes, holding ``state``; a mismatch with ``cfg`` is a checkpoint error."""
    try:
        return model_class(cfg).from_state_dict(cfg, state, dtype=dtype, backend=backend)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"the weights do not fit together: {exc}") from None


def _preprocess(ckpt, cfg, choice, img_size_changed):
    if isinstance(choice, PreprocessConfig):
        return choice
    if isinstance(choice, str):
        if choice not in PRESETS:
            raise ValueError(f"preprocess must be a PreprocessConfig or one of {sorted(PRESETS)}, got {choice!r}")
        return preset(choice, cfg.img_size)
    if choice is not None:
        raise TypeError(f"preprocess must be a PreprocessConfig or a preset name, got {type(choice).__name__}")
    if ckpt.preprocess is not None:
        pre = ckpt.preprocess
        return pre.replace(input_size=tuple(cfg.img_size)) if img_size_changed else pre
    if ckpt.preprocess_default is not None:
        return ckpt.preprocess_default.replace(input_size=tuple(cfg.img_size))
    return preset(ckpt.preprocess_preset, cfg.img_size)


def head_candidates(width):
    """Head counts that divide ``width`` into heads of at least 8 features."""
    divisors = {d for i in range(1, math.isqrt(width) + 1) if width % i == 0 for d in (i, width // i)}
    return sorted(h for h in divisors if width // h >= 8) or [1]
