"""Hugging Face ``ViTForImageClassification`` / ``ViTModel`` weights (the names on disk).

    timm name                 HF name (``vit.`` prefix for ViTForImageClassification)
    cls_token                 embeddings.cls_token
    pos_embed                 embeddings.position_embeddings (1, 1+P, D)
    patch_embed.proj.*        embeddings.patch_embeddings.projection.*
    blocks.i.norm1.*          encoder.layer.i.layernorm_before.*
    blocks.i.attn.qkv.*       encoder.layer.i.attention.attention.{query,key,value}.*   stacked [q; k; v]
    blocks.i.attn.proj.*      encoder.layer.i.attention.output.dense.*
    blocks.i.norm2.*          encoder.layer.i.layernorm_after.*
    blocks.i.mlp.fc1.*        encoder.layer.i.intermediate.dense.*
    blocks.i.mlp.fc2.*        encoder.layer.i.output.dense.*
    norm.*                    layernorm.*
    head.*                    classifier.*            (reads the final-norm class token)
    pre_logits.fc.*           pooler.dense.*          (ViTModel: dense + tanh on the class token,
                                                       i.e. the official representation layer)

config.json gives heads, ``layer_norm_eps`` (HF default 1e-12), ``hidden_act`` and ``id2label``;
preprocessor_config.json gives the ViTImageProcessor recipe.  HF resamples position embeddings
bicubically (``interpolate_pos_encoding``); npvit offers timm's bicubic for it.
"""
import os
import re

import numpy as np

from ..preprocess.config import PreprocessConfig
from .checkpoint import Arrays, Checkpoint, count_blocks, heads_by_width
from .errors import CheckpointError
from .fields import Fields

_ACT = {"gelu": "exact", "gelu_python": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
        "gelu_fast": "tanh", "gelu_accurate": "tanh"}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes


def is_hf(arrays):
    return any(k.startswith(("vit.embeddings.", "embeddings.patch_embeddings.")) for k in arrays)


def read_hf(arrays, source, config=None, processor=None):
    cfg = Fields(config or {}, os.path.join(os.path.dirname(source), "config.json"))
    prefix = "vit." if any(k.startswith("vit.embeddings.") for k in arrays) else ""
    a = Arrays(arrays, source)
    e = prefix + "embeddings."
    state, notes = {}, []
    w = a.take(e + "patch_embeddings.projection.weight", ndim=4)
    D = w.shape[0]
    state["patch_embed.proj.weight"] = w
    state["patch_embed.proj.bias"] = a.take(e + "patch_embeddings.projection.bias", shape=(D,))
    state["cls_token"] = a.take(e + "cls_token", shape=(1, 1, D))
    state["pos_embed"] = a.take(e + "position_embeddings", ndim=3)
    if a.has(e + "mask_token"):
        a.take(e + "mask_token")
        notes.append("dropped embeddings.mask_token (used only for masked-image-modeling training)")
    depth = count_blocks(arrays, prefix + "encoder.layer.", ".layernorm_before.weight")
    for i in range(depth):
        h, b = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        state[b + "norm1.weight"] = a.take(h + "layernorm_before.weight", shape=(D,))
        state[b + "norm1.bias"] = a.take(h + "layernorm_before.bias", shape=(D,))
        state[b + "attn.qkv.weight"] = np.concatenate(
            [a.take(f"{h}attention.attention.{n}.weight", shape=(D, D)) for n in ("query", "key", "value")])
        if a.has(h + "attention.attention.query.bias"):
            state[b + "attn.qkv.bias"] = np.concatenate(
                [a.take(f"{h}attention.attention.{n}.bias", shape=(D,)) for n in ("query", "key", "value")])
        state[b + "attn.proj.weight"] = a.take(h + "attention.output.dense.weight", shape=(D, D))
        state[b + "attn.proj.bias"] = a.take(h + "attention.output.dense.bias", shape=(D,))
        state[b + "norm2.weight"] = a.take(h + "layernorm_after.weight", shape=(D,))
        state[b + "norm2.bias"] = a.take(h + "layernorm_after.bias", shape=(D,))
        state[b + "mlp.fc1.weight"] = a.take(h + "intermediate.dense.weight", ndim=2)
        state[b + "mlp.fc1.bias"] = a.take(h + "intermediate.dense.bias", ndim=1)
        state[b + "mlp.fc2.weight"] = a.take(h + "output.dense.weight", ndim=2)
        state[b + "mlp.fc2.bias"] = a.take(h + "output.dense.bias", shape=(D,))
    state["norm.weight"] = a.take(prefix + "layernorm.weight", shape=(D,))
    state["norm.bias"] = a.take(prefix + "layernorm.bias", shape=(D,))
    if a.has("classifier.weight"):
        state["head.weight"] = a.take("classifier.weight", ndim=2)
        state["head.bias"] = a.take("classifier.bias", ndim=1)
        if a.has(prefix + "pooler.dense.weight"):  # the classifier never reads the pooler
            a.take(prefix + "pooler.dense.weight"), a.take(prefix + "pooler.dense.bias")
            notes.append("dropped pooler.dense: ViTForImageClassification's classifier does not use it")
    elif a.has(prefix + "pooler.dense.weight"):
        if cfg.str("pooler_act", "tanh") != "tanh":
            raise CheckpointError(f"{source}: pooler_act={config['pooler_act']!r}; npvit's "
                                  "representation layer uses tanh (pass representation_size=None to drop it)")
        state["pre_logits.fc.weight"] = a.take(prefix + "pooler.dense.weight", ndim=2)
        state["pre_logits.fc.bias"] = a.take(prefix + "pooler.dense.bias", ndim=1)
        notes.append("ViTModel's pooler (dense + tanh on the class token) is kept as the "
                     "representation layer: forward() returns pooler_output "
                     "(load with representation_size=None for the plain class-token features)")
    a.refuse_unused("a Hugging Face ViT checkpoint")

    ckpt = Checkpoint(state=state, origin="hf", preprocess_preset="hf", resample="bicubic", notes=notes)
    apply_hf_config(ckpt, cfg, processor, source, default_eps=1e-12)
    if "num_attention_heads" in cfg:
        ckpt.known["num_heads"] = cfg.int("num_attention_heads", minimum=1)
    elif heads_by_width(D):
        ckpt.defaults["num_heads"] = heads_by_width(D)
    return ckpt


def apply_hf_config(ckpt, cfg, processor, source, default_eps):
    """What a Hugging Face config.json (``cfg``, Fields) and preprocessor_config.json say, for ViT
    and Swin alike: image size, LayerNorm eps, the GELU form, labels, the preprocessing."""
    ckpt.img_size = cfg.pair("image_size")
    ckpt.defaults["norm_eps"] = cfg.number("layer_norm_eps", default_eps, positive=True)
    act = cfg.str("hidden_act", "gelu")
    if act not in _ACT:
        raise CheckpointError(f"{source}: hidden_act={act!r}; npvit implements GELU "
                              f"({', '.join(sorted(_ACT))})")
    ckpt.defaults["gelu"] = _ACT[act]
    labels = _labels(cfg.d.get("id2label"), cfg.where)
    if labels is not None:
        ckpt.defaults["label_names"] = labels
    if processor is not None:
        ckpt.preprocess = preprocess_from_processor(
            processor, ckpt.notes, os.path.join(os.path.dirname(source), "preprocessor_config.json"))


def _labels(id2label, where):
    """id2label -> names in index order; HF's placeholder names (LABEL_0, ...) mean "none"."""
    if id2label is None:
        return None
    if not isinstance(id2label, dict) or not all(isinstance(v, str) for v in id2label.values()):
        raise CheckpointError(f"{where}: id2label must map class indices to names (strings)")
    if not id2label:
        return None
    try:
        items = sorted((int(k), v) for k, v in id2label.items())
    except (TypeError, ValueError):
        return None
    if [i for i, _ in items] != list(range(len(items))):
        return None
    names = tuple(v for _, v in items)
    if all(re.fullmatch(rf"LABEL_{i}", n) for i, n in enumerate(names)):
        return None
    return names


def preprocess_from_processor(processor, notes, where="preprocessor_config.json"):
    """ViTImageProcessor settings -> PreprocessConfig (a direct resize, or resize + center crop)."""
    p = Fields(processor, where)
    # Older ViTFeatureExtractor files say "size": 224 (a square), as HF's get_size_dict reads it.
    size, crop = (Fields({"height": p.d[k], "width": p.d[k]}, f"{where} {k}") if type(p.d.get(k)) is int
                  else p.dict(k) for k in ("size", "crop_size"))
    resample = p.int("resample", 2)
    interpolation = _RESAMPLE.get(resample)
    if interpolation is None:
        notes.append(f"preprocessor resample={resample} is not bilinear/bicubic; using bilinear")
        interpolation = "bilinear"
    factor = p.number("rescale_factor", 1 / 255)
    if p.bool("do_rescale", True) and abs(factor - 1 / 255) > 1e-9:
        notes.append(f"preprocessor rescale_factor={factor} is not 1/255; using 1/255")
    if p.bool("do_normalize", True):
        mean = p.numbers("image_mean", 3, (0.5, 0.5, 0.5))
        std = p.numbers("image_std", 3, (0.5, 0.5, 0.5))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        if "shortest_edge" in size and p.bool("do_center_crop", False) and "height" in crop:
            ch, cw = crop.int("height", minimum=1), crop.int("width", minimum=1)
            return PreprocessConfig(input_size=(ch, cw), interpolation=interpolation, crop_mode="center",
                                    crop_pct=ch / size.int("shortest_edge", minimum=1), mean=mean, std=std)
        h, w = size.int("height", 224, minimum=1), size.int("width", 224, minimum=1)
        return PreprocessConfig(input_size=(h, w), interpolation=interpolation, crop_pct=1.0,
                                crop_mode="squash", mean=mean, std=std)
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{where}: {exc}") from None
