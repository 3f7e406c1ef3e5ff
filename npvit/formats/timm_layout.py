"""PyTorch state dicts under timm's names: timm, the seed's vit_model.py, and DeiT.

These are npvit's own parameter names, so reading is a check, not a rename:

    cls_token, [dist_token], pos_embed (1, prefix + P, D), patch_embed.proj.{weight,bias},
    blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight,bias}, norm.*,
    [pre_logits.fc.*] (the seed's representation layer), head.*, [head_dist.*] (DeiT distilled)

A state dict records neither the number of heads nor the image size: heads come from the
variant table by width (overridable), the grid is assumed square.  Files npvit wrote itself
carry its config in the safetensors metadata (``npvit.config``), which is used when present.
timm resamples position embeddings bicubically with antialiasing (``resample_abs_pos_embed``).
"""
import os
import re

from ..model.config import ViTConfig
from ..model.variants import VARIANTS
from ..preprocess.config import PreprocessConfig
from .checkpoint import Checkpoint, heads_by_width
from .errors import CheckpointError
from .fields import Fields, parse_json, preprocess_config, vit_config

_PARAM = re.compile(r"^(cls_token|dist_token|pos_embed|patch_embed\.proj\.(weight|bias)|"
                    r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|"
                    r"norm\.(weight|bias)|pre_logits\.fc\.(weight|bias)|head(_dist)?\.(weight|bias))$")
_WRAP_PREFIXES = ("module.", "model.", "_orig_mod.")


def is_timm(arrays):
    return any(k.endswith("patch_embed.proj.weight") for k in arrays)


def read_timm(arrays, source, metadata=None, hub_config=None):
    arrays = _strip_prefix(arrays)
    unknown = sorted(k for k in arrays if not _PARAM.match(k))
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise CheckpointError(
            f"{source}: a timm-style state dict with arrays npvit's ViT has no place for: {shown}. "
            "It is a ViT variant npvit does not implement (LayerScale, register tokens, fc_norm/avg "
            "pooling, CLIP pre-norm, attention pooling, ...); loading it without them would give "
            "wrong outputs.")
    for k, v in arrays.items():
        if v.dtype.kind != "f":
            raise CheckpointError(f"{source}: array {k!r} has dtype {v.dtype}, expected floating-point weights")
    if "patch_embed.proj.weight" not in arrays:
        raise CheckpointError(f"{source}: no patch_embed.proj.weight, expected a ViT state dict")
    width = arrays["patch_embed.proj.weight"].shape[0]
    distilled = "dist_token" in arrays
    origin = "deit" if distilled else "timm"
    ckpt = Checkpoint(state=dict(arrays), origin=origin, preprocess_preset=origin,
                      resample="bicubic")
    heads = heads_by_width(width)
    if heads:
        ckpt.defaults["num_heads"] = heads
    if hub_config is not None:
        _apply_hub_config(ckpt, hub_config, source)
    if metadata and "npvit.config" in metadata:
        _apply_npvit_metadata(ckpt, metadata, source)
    return ckpt


def _strip_prefix(arrays):
    """'module.' (DataParallel), 'model.' or '_orig_mod.' (torch.compile) on every key."""
    for p in _WRAP_PREFIXES:
        if arrays and all(k.startswith(p) for k in arrays):
            return {k[len(p):]: v for k, v in arrays.items()}
    return arrays


def _apply_hub_config(ckpt, config, source):
    """timm hub folder config.json: model_args, pretrained_cfg (preprocessing), label names."""
    cfg = Fields(config, os.path.join(os.path.dirname(source), "config.json"))
    args = cfg.dict("model_args")
    if "num_heads" in args:
        ckpt.known["num_heads"] = args.int("num_heads", minimum=1)
    else:
        arch = cfg.str("architecture", "").split(".")[0]
        known = VARIANTS.get(arch)
        if isinstance(known, ViTConfig) and ckpt.state["patch_embed.proj.weight"].shape[0] == known.embed_dim:
            ckpt.defaults["num_heads"] = known.num_heads
    ckpt.img_size = args.pair("img_size")
    # Options that change the computation without adding arrays (the others show up as arrays).
    has_cls = "cls_token" in ckpt.state
    pool = args.str("global_pool", cfg.str("global_pool", "token"))
    if has_cls and pool not in ("token", ""):
        raise CheckpointError(f"{source}: timm global_pool={pool!r} with a class token; npvit pools "
                              "by the class token, or by the mean when there is none")
    if has_cls and args.bool("no_embed_class", False):
        raise CheckpointError(f"{source}: timm no_embed_class=True (position embedding without the "
                              "class slot) is not implemented for timm files; big_vision .npz files are")
    names = config.get("label_names")
    if isinstance(names, dict):  # {index: name} when the indices have gaps
        try:
            items = sorted((int(k), v) for k, v in names.items())
            names = [v for _, v in items] if [i for i, _ in items] == list(range(len(items))) else None
        except (TypeError, ValueError):
            names = None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        ckpt.defaults["label_names"] = tuple(names)
    ckpt.preprocess = hub_preprocess(config, source, ckpt.notes)


def hub_preprocess(config, source, notes):
    """A timm hub config.json's pretrained_cfg as a PreprocessConfig (ViT and Swin folders alike)."""
    pc = Fields(config, os.path.join(os.path.dirname(source), "config.json")).dict("pretrained_cfg")
    size = pc.d.get("input_size", [3, 224, 224])
    if not (isinstance(size, list) and len(size) == 3 and all(type(v) is int and v > 0 for v in size)):
        raise CheckpointError(f"{pc.where}: input_size is {size!r}, expected [channels, height, width]")
    interpolation = pc.str("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear"):
        notes.append(f"pretrained_cfg interpolation {interpolation!r} is not implemented; using bicubic")
        interpolation = "bicubic"
    try:
        return PreprocessConfig(
            input_size=tuple(size[-2:]), interpolation=interpolation,
            crop_pct=pc.number("crop_pct", 0.9), crop_mode=pc.str("crop_mode", "center"),
            mean=pc.numbers("mean", 3, (0.5, 0.5, 0.5)), std=pc.numbers("std", 3, (0.5, 0.5, 0.5)))
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{pc.where}: {exc}") from None


def _apply_npvit_metadata(ckpt, metadata, source):
    """A file written by ``npvit convert --to timm`` records npvit's full config."""
    where = f"{source}: its npvit.config metadata"
    try:
        cfg = vit_config(parse_json(metadata["npvit.config"], where), where)
        pre = metadata.get("npvit.preprocess")
        if pre:
            p = parse_json(pre, f"{source}: its npvit.preprocess metadata")
            ckpt.preprocess = preprocess_config(p, f"{source}: its npvit.preprocess metadata")
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (the metadata is damaged)") from None
    ckpt.known["num_heads"] = cfg.num_heads
    for k in ("gelu", "norm_eps", "qk_scale", "label_names"):
        if getattr(cfg, k) is not None:
            ckpt.defaults[k] = getattr(cfg, k)
    ckpt.img_size = tuple(cfg.img_size)
