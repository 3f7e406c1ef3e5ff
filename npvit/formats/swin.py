"""Swin Transformer checkpoints: timm's, the original microsoft/Swin-Transformer files, Hugging Face's.

    timm (current)   npvit's own names: patch_embed.{proj,norm}, layers.i.downsample.{norm,reduction}
                     at the start of stages 1.., layers.i.blocks.j.{norm1, attn.relative_position_bias_table,
                     attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head.fc
    original / old   ``{"model": sd}``; layers.i.downsample at the END of stage i (moved to stage i+1),
    timm             head.* (-> head.fc.*), absolute_pos_embed; the buffers relative_position_index and
                     attn_mask, which are checked against the layout npvit builds, then dropped
    Hugging Face     swin.embeddings.{patch_embeddings.projection, norm, position_embeddings},
                     swin.encoder.layers.N.blocks.M.{layernorm_before, attention.self.{query, key, value,
                     relative_position_bias_table}, attention.output.dense, layernorm_after,
                     intermediate.dense, output.dense}, swin.encoder.layers.N.downsample (end of stage N),
                     swin.layernorm, classifier; config.json and preprocessor_config.json beside them

The shapes fix the architecture (width, patch, depths, heads from the tables' columns, the window
from their rows, MLP ratio, qkv bias, patch norm, absolute position embedding, classes); the image
size comes from the file's config, else the absolute position embedding, else the standard
relation (the last stage's grid is one window: 224 for window 7, 384 for window 12).  A window or
image size that changes a table's shape resamples it as timm does (``resize_relpos_table``).
"""
import dataclasses
import math
import os
import re
import warnings

import numpy as np

from ..model.config import SwinConfig
from ..model.init import init_params
from ..ops.relpos import relative_position_index
from ..ops.window import WindowLayout, shift_mask
from ..preprocess.config import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from .checkpoint import Checkpoint, CheckpointWarning, count_blocks, labels_for_head
from .errors import CheckpointError
from .fields import Fields
from .resample import resample_pos_embed, resize_relpos_table

_BLOCK = r"layers\.\d+\.blocks\.\d+\."
_PARAM = re.compile(
    r"^(patch_embed\.(proj|norm)\.(weight|bias)|absolute_pos_embed|"
    rf"{_BLOCK}(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|"
    rf"{_BLOCK}attn\.relative_position_bias_table|"
    r"layers\.\d+\.downsample\.(norm\.(weight|bias)|reduction\.weight)|"
    r"norm\.(weight|bias)|head\.fc\.(weight|bias))$")
_BUFFERS = ("relative_position_index", "attn_mask")
_HF_BLOCK = {"layernorm_before": "norm1", "attention.output.dense": "attn.proj",
             "layernorm_after": "norm2", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
# What the weights fix, against what a caller may change (the rest: conventions and training knobs).
STRUCTURAL = ("embed_dim", "patch_size", "in_c", "depths", "num_heads", "mlp_ratio", "qkv_bias",
              "patch_norm", "ape")
CONFIG_FIELDS = {f.name for f in dataclasses.fields(SwinConfig)}
# Hugging Face's default Swin processor (microsoft/swin-*): resize straight to 224, bicubic, ImageNet stats.
HF_PREPROCESS = PreprocessConfig(interpolation="bicubic", crop_pct=1.0, crop_mode="squash",
                                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
# The original code's test transform (TEST.CROP): resize to 256/224 of the size, bicubic, centre crop.
ORIGINAL_PREPROCESS = PreprocessConfig(interpolation="bicubic", crop_pct=224 / 256, mean=IMAGENET_MEAN,
                                       std=IMAGENET_STD)


def is_swin(arrays):
    return any(k.endswith("relative_position_bias_table") for k in arrays)


def read_swin(arrays, source, metadata=None, hf_config=None, processor=None, hub_config=None):
    """A Swin checkpoint in any of the three layouts -> Checkpoint under timm's names (plus what a
    Hugging Face config.json, a timm hub config.json or npvit's safetensors metadata record)."""
    from .hf import apply_hf_config
    from .timm_layout import _strip_prefix, hub_preprocess

    arrays = _strip_prefix(arrays)
    hf = any(k.startswith(("swin.", "encoder.layers.")) for k in arrays)
    notes = []
    if hf:
        state, buffers = _from_hf(arrays, source)
        origin = "hf"
    else:
        state, buffers = _split_buffers(arrays)
        old = "layers.0.downsample.reduction.weight" in state  # timm's stage 0 has no merging
        if old:  # the original layout: merging at the end of a stage, head without .fc
            state = {re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
                     .replace("head.", "head.fc.", 1) if k.startswith(("layers.", "head.")) else k: v
                     for k, v in state.items()}
        origin = "swin" if old or buffers else "timm"
    unknown = sorted(k for k in state if not _PARAM.match(k))
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise CheckpointError(f"{source}: a Swin checkpoint with arrays npvit's Swin Transformer has no "
                              f"place for: {shown} (a Swin V2 or another variant npvit does not implement)")
    for k, v in state.items():
        if v.dtype.kind != "f":
            raise CheckpointError(f"{source}: array {k!r} has dtype {v.dtype}, expected floating-point weights")
    ckpt = Checkpoint(state=state, origin=origin, notes=notes, resample="bicubic", arch="swin", buffers=buffers)
    # timm files keep timm's window rule; Hugging Face's and the original code's agree with each other
    ckpt.defaults["window_rule"] = "timm" if origin == "timm" else "hf"
    if origin == "hf":
        cfg = Fields(hf_config or {}, os.path.join(os.path.dirname(source), "config.json"))
        apply_hf_config(ckpt, cfg, processor, source, default_eps=1e-5)
        if "window_size" in cfg:
            ckpt.known["window_size"] = cfg.int("window_size", minimum=1)
        ckpt.preprocess_default = HF_PREPROCESS
    elif origin == "swin":
        ckpt.preprocess_default = ORIGINAL_PREPROCESS
    else:
        ckpt.preprocess_preset = "deit"   # timm's Swin cfgs: bicubic, crop 0.9 (1.0 above 224), ImageNet stats
    if hub_config is not None:
        hub = Fields(hub_config, os.path.join(os.path.dirname(source), "config.json"))
        args = hub.dict("model_args")
        ckpt.img_size = args.pair("img_size", ckpt.img_size)
        if "window_size" in args:
            ckpt.known["window_size"] = args.int("window_size", minimum=1)
        ckpt.preprocess = hub_preprocess(hub_config, source, notes)
    if metadata and "npvit.config" in metadata:  # written by ``npvit convert --to timm``
        from .fields import parse_json, preprocess_config, swin_config

        where = f"{source}: its npvit.config metadata"
        cfg = swin_config(parse_json(metadata["npvit.config"], where), where)
        apply_config(ckpt, cfg)
        if metadata.get("npvit.preprocess"):
            where = f"{source}: its npvit.preprocess metadata"
            ckpt.preprocess = preprocess_config(parse_json(metadata["npvit.preprocess"], where), where)
    return ckpt


def apply_config(ckpt, cfg):
    """What a stored SwinConfig fixes (npvit's own files): window, size, rule and conventions."""
    ckpt.known["window_size"] = cfg.window_size
    ckpt.img_size = tuple(cfg.img_size)
    ckpt.defaults.update({k: v for k, v in cfg.to_dict().items()
                          if k not in STRUCTURAL and k not in ("img_size", "window_size")})
    if cfg.label_names is not None:
        ckpt.defaults["label_names"] = cfg.label_names


def _split_buffers(arrays):
    state = {k: v for k, v in arrays.items() if not k.endswith(_BUFFERS)}
    buffers = {k: v for k, v in arrays.items() if k.endswith(_BUFFERS)}
    return state, buffers


def _from_hf(arrays, source):
    """Hugging Face's names -> timm's (q, k, v stacked into qkv; merging moved to the next stage)."""
    prefix = "swin." if any(k.startswith("swin.") for k in arrays) else ""
    state, buffers = {}, {}
    rename = {prefix + "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
              prefix + "embeddings.norm.": "patch_embed.norm.", prefix + "layernorm.": "norm.",
              "classifier.": "head.fc."}
    qkv = {}
    for k, v in arrays.items():
        if k.endswith(_BUFFERS):
            buffers[k] = v
            continue
        if k == prefix + "embeddings.position_embeddings":
            state["absolute_pos_embed"] = v
            continue
        if k == prefix + "embeddings.mask_token":
            continue  # masked-image-modeling training only
        m = re.match(rf"^{re.escape(prefix)}encoder\.layers\.(\d+)\.(blocks\.(\d+)\.|downsample\.)(.*)$", k)
        if m:
            stage, rest = int(m.group(1)), m.group(4)
            if m.group(3) is None:  # the end of stage N is the start of stage N + 1 in timm's layout
                state[f"layers.{stage + 1}.downsample.{rest}"] = v
                continue
            b = f"layers.{stage}.blocks.{m.group(3)}."
            q = re.match(r"^attention\.self\.(query|key|value)\.(weight|bias)$", rest)
            if q:
                qkv.setdefault((b, q.group(2)), {})[q.group(1)] = v
            elif rest == "attention.self.relative_position_bias_table":
                state[b + "attn.relative_position_bias_table"] = v
            else:
                for theirs, ours in _HF_BLOCK.items():
                    if rest.startswith(theirs + "."):
                        state[b + ours + rest[len(theirs):]] = v
                        break
                else:
                    state[k] = v  # reported as unknown by the caller
            continue
        for theirs, ours in rename.items():
            if k.startswith(theirs):
                state[ours + k[len(theirs):]] = v
                break
        else:
            state[k] = v
    for (b, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{source}: {b} has {sorted(parts)} of query/key/value {kind}s; "
                                  "all three are needed")
        state[f"{b}attn.qkv.{kind}"] = np.concatenate([parts[n] for n in ("query", "key", "value")])
    return state, buffers


# --- from the arrays to a SwinConfig ----------------------------------------------------------------
def infer_swin(state, source):
    """The SwinConfig fields the shapes fix, plus the window the tables were made for."""
    def need(name, ndim):
        if name not in state:
            raise CheckpointError(f"{source}: no {name!r} among the weights; every Swin Transformer "
                                  "has one (the file is incomplete or not a Swin)")
        if state[name].ndim != ndim:
            raise CheckpointError(f"{source}: {name} has shape {state[name].shape}, expected {ndim} dimensions")
        return state[name]

    C, in_c, ph, pw = need("patch_embed.proj.weight", 4).shape
    stages = count_blocks(state, "layers.", ".blocks.0.norm1.weight")
    if stages == 0:
        raise CheckpointError(f"{source}: no Swin stages found, expected layers.0.blocks.0.* ...")
    depths = tuple(count_blocks(state, f"layers.{i}.blocks.", ".norm1.weight") for i in range(stages))
    heads, windows = [], []
    for i in range(stages):
        T, H = need(f"layers.{i}.blocks.0.attn.relative_position_bias_table", 2).shape
        heads.append(int(H))
        side = math.isqrt(T)
        if side * side == T and side % 2:  # a square window; a stage clipped to a non-square grid
            windows.append((side + 1) // 2)  # has a (2 wh - 1)(2 ww - 1) table, checked later
    hidden = need("layers.0.blocks.0.mlp.fc1.weight", 2).shape[0]
    fields = dict(embed_dim=int(C), in_c=int(in_c), patch_size=(int(ph), int(pw)), depths=depths,
                  num_heads=tuple(heads), mlp_ratio=hidden / C, qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state,
                  patch_norm="patch_embed.norm.weight" in state, ape="absolute_pos_embed" in state,
                  num_classes=int(need("head.fc.weight", 2).shape[0]) if "head.fc.weight" in state else 0)
    return fields, max(windows) if windows else None


def build_swin(ckpt, overrides, source):
    """``(SwinConfig, state, img_size_changed)`` from a Swin checkpoint and the caller's overrides."""
    unknown = sorted(set(overrides) - CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown Swin setting(s) {unknown}; known: {sorted(CONFIG_FIELDS)}")
    fields, window = infer_swin(ckpt.state, source)
    merged = {k: v for k, v in ckpt.defaults.items() if k not in STRUCTURAL}
    merged.update(fields)
    merged["window_size"] = ckpt.known.get("window_size", window)
    if merged["window_size"] is None:
        raise CheckpointError(f"{source}: no stage's relative position table is square, so the window "
                              "size cannot be read off the weights: pass window_size= (and img_size=)")
    patch, stages = fields["patch_size"], len(fields["depths"])
    if ckpt.img_size is not None:
        merged["img_size"] = tuple(ckpt.img_size)
    elif fields["ape"]:
        grid = _square(ckpt.state["absolute_pos_embed"].shape[1], source)
        merged["img_size"] = (grid * patch[0], grid * patch[1])
    elif _first_mask(ckpt.buffers) is not None:  # the original's masks: (windows, n, n) of stage 0
        grid = _square(_first_mask(ckpt.buffers).shape[0], source, "stage 0's attn_mask windows") * merged["window_size"]
        merged["img_size"] = (grid * patch[0], grid * patch[1])
    elif "img_size" in overrides:  # a bare state dict: the caller says what it was trained at
        merged["img_size"] = overrides["img_size"]
    else:  # the standard relation: the last stage's grid is one window
        side = merged["window_size"] * 2 ** (stages - 1)
        merged["img_size"] = (side * patch[0], side * patch[1])
    merged["label_names"] = labels_for_head(merged.get("label_names"), fields["num_classes"], source)
    try:
        file_cfg = SwinConfig(**merged)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: the weights and settings the file records do not make a "
                              f"Swin Transformer ({exc})") from None
    _check_tables(ckpt.state, file_cfg, source)
    _check_buffers(getattr(ckpt, "buffers", {}), file_cfg, source)

    for k, v in overrides.items():
        if k in STRUCTURAL and file_cfg.replace(**{k: v}) != file_cfg:
            raise CheckpointError(f"{source}: {k}={v!r} does not fit these weights, which have "
                                  f"{k}={getattr(file_cfg, k)!r}")
    changes = dict(overrides)
    head_changed = "num_classes" in overrides and overrides["num_classes"] != file_cfg.num_classes
    if head_changed and "label_names" not in overrides:
        changes["label_names"] = None
    cfg = file_cfg.replace(**changes)

    state = dict(ckpt.state)
    for name, shape in cfg.parameter_shapes().items():
        if name.endswith("relative_position_bias_table") and tuple(state[name].shape) != tuple(shape):
            i = int(name.split(".")[1])
            state[name] = resize_relpos_table(state[name], file_cfg.stage_window(i)[0], cfg.stage_window(i)[0])
    if cfg.ape and cfg.grid_size != file_cfg.grid_size:
        state["absolute_pos_embed"] = resample_pos_embed(state["absolute_pos_embed"], file_cfg.grid_size,
                                                         cfg.grid_size, 0, "bicubic")
    if head_changed:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        head = {k: s for k, s in cfg.parameter_shapes().items() if k.startswith("head.")}
        state.update(init_params(head, seed=0, linear_std=0.02))
        if cfg.num_classes:
            warnings.warn(f"{source}: the file's {file_cfg.num_classes}-class head was replaced by a freshly "
                          f"initialised {cfg.num_classes}-class head (train it before use)",
                          CheckpointWarning, stacklevel=3)
    return cfg, state, cfg.img_size != file_cfg.img_size


def _square(n, source, what="absolute_pos_embed's positions"):
    s = math.isqrt(n)
    if s * s != n:
        raise CheckpointError(f"{source}: {what} ({n}) do not make a square grid; pass img_size=(H, W)")
    return s


def _first_mask(buffers):
    """The attn_mask of stage 0's first shifted block, if the file saved it."""
    for name, value in buffers.items():
        if name.endswith("attn_mask") and re.search(r"layers\.0\.blocks\.1\.", name):
            return value
    return None


def _check_tables(state, cfg, source):
    """Every table must be the size the file's own config gives its stage (a depth or window that
    does not add up is a damaged or mislabelled file, not something to resample)."""
    for name, shape in cfg.parameter_shapes().items():
        if name.endswith("relative_position_bias_table") and name in state \
                and tuple(state[name].shape) != tuple(shape):
            i = int(name.split(".")[1])
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(state[name].shape)}, but stage {i} of a "
                f"window-{cfg.window_size} model at {cfg.img_size[0]}x{cfg.img_size[1]} needs {tuple(shape)} "
                f"(window {cfg.stage_window(i)[0]}): the file's windows disagree between stages; pass the "
                "img_size and window_size it was trained with")


def _check_buffers(buffers, cfg, source):
    """The original code saves its relative_position_index and attn_mask buffers: they must be the
    ones npvit builds for the file's layout, or the file was made for another window or size."""
    for name, value in buffers.items():
        m = re.search(r"layers\.(\d+)\.blocks\.(\d+)\.(attn\.relative_position_index|attn_mask)$",
                      name.replace("swin.encoder.", "").replace("attention.self.relative_position_index",
                                                                "attn.relative_position_index"))
        if m is None:
            raise CheckpointError(f"{source}: buffer {name!r} belongs to no block npvit knows")
        i, j = int(m.group(1)), int(m.group(2))
        if i >= cfg.num_stages or j >= cfg.depths[i]:
            raise CheckpointError(f"{source}: buffer {name!r} names a block the weights do not have")
        window, shift = cfg.stage_window(i)
        layout = WindowLayout(cfg.stage_grid(i), window, shift if j % 2 else (0, 0), cfg.window_rule == "hf")
        if m.group(3).endswith("relative_position_index"):
            want, what = relative_position_index(window, np), f"window {window}"
        else:
            want = shift_mask(layout, np, np.float64)
            what = f"a {layout.grid} grid in windows {window} shifted by {layout.shift}"
            if want is None:
                want = np.zeros((0,))
        have = np.asarray(value)
        if have.shape != want.shape or not np.array_equal(have.astype(np.float64), np.asarray(want, np.float64)):
            raise CheckpointError(
                f"{source}: {name} {have.shape} is not the buffer of {what}: the file was made for "
                f"another window or image size than the {cfg.window_size}-window {cfg.img_size[0]}x"
                f"{cfg.img_size[1]} its weights suggest; pass img_size= and window_size= as it was trained")
