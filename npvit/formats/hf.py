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
import re

import numpy as np

from ..preprocess.config import PreprocessConfig
from .checkpoint import Arrays, Checkpoint, count_blocks, heads_by_width
from .errors import CheckpointError

_ACT = {"gelu": "exact", "gelu_python": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
        "gelu_fast": "tanh", "gelu_accurate": "tanh"}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes


def is_hf(arrays):
    return any(k.startswith(("vit.embeddings.", "embeddings.patch_embeddings.")) for k in arrays)


def read_hf(arrays, source, config=None, processor=None):
    config = config or {}
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
        if config.get("pooler_act", "tanh") != "tanh":
            raise CheckpointError(f"{source}: pooler_act={config['pooler_act']!r}; npvit's "
                                  "representation layer uses tanh (pass representation_size=None to drop it)")
        state["pre_logits.fc.weight"] = a.take(prefix + "pooler.dense.weight", ndim=2)
        state["pre_logits.fc.bias"] = a.take(prefix + "pooler.dense.bias", ndim=1)
        notes.append("ViTModel's pooler (dense + tanh on the class token) is kept as the "
                     "representation layer: forward() returns pooler_output "
                     "(load with representation_size=None for the plain class-token features)")
    a.refuse_unused("a Hugging Face ViT checkpoint")

    ckpt = Checkpoint(state=state, origin="hf", preprocess_preset="hf", resample="bicubic", notes=notes)
    ckpt.defaults["norm_eps"] = float(config.get("layer_norm_eps", 1e-12))
    act = config.get("hidden_act", "gelu")
    if act not in _ACT:
        raise CheckpointError(f"{source}: hidden_act={act!r}; npvit implements GELU "
                              f"({', '.join(sorted(_ACT))})")
    ckpt.defaults["gelu"] = _ACT[act]
    if "num_attention_heads" in config:
        ckpt.known["num_heads"] = int(config["num_attention_heads"])
    elif heads_by_width(D):
        ckpt.defaults["num_heads"] = heads_by_width(D)
    if config.get("image_size") is not None:
        s = config["image_size"]
        ckpt.img_size = (int(s), int(s)) if isinstance(s, (int, float)) else tuple(int(v) for v in s)
    labels = _labels(config.get("id2label"))
    if labels is not None:
        ckpt.defaults["label_names"] = labels
    if processor is not None:
        ckpt.preprocess = preprocess_from_processor(processor, notes)
    return ckpt


def _labels(id2label):
    """id2label -> names in index order; HF's placeholder names (LABEL_0, ...) mean "none"."""
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        items = sorted((int(k), str(v)) for k, v in id2label.items())
    except (TypeError, ValueError):
        return None
    if [i for i, _ in items] != list(range(len(items))):
        return None
    names = tuple(v for _, v in items)
    if all(re.fullmatch(rf"LABEL_{i}", n) for i, n in enumerate(names)):
        return None
    return names


def preprocess_from_processor(p, notes):
    """ViTImageProcessor settings -> PreprocessConfig (a direct resize, or resize + center crop)."""
    size = p.get("size") or {}
    resample = p.get("resample", 2)
    interpolation = _RESAMPLE.get(resample)
    if interpolation is None:
        notes.append(f"preprocessor resample={resample} is not bilinear/bicubic; using bilinear")
        interpolation = "bilinear"
    if p.get("do_rescale", True) and abs(float(p.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        notes.append(f"preprocessor rescale_factor={p['rescale_factor']} is not 1/255; using 1/255")
    if p.get("do_normalize", True):
        mean = tuple(float(m) for m in p.get("image_mean", (0.5, 0.5, 0.5)))
        std = tuple(float(s) for s in p.get("image_std", (0.5, 0.5, 0.5)))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    crop = p.get("crop_size") or {}
    if "shortest_edge" in size and p.get("do_center_crop") and "height" in crop:
        return PreprocessConfig(input_size=(int(crop["height"]), int(crop["width"])),
                                interpolation=interpolation, crop_mode="center",
                                crop_pct=int(crop["height"]) / int(size["shortest_edge"]), mean=mean, std=std)
    h, w = int(size.get("height", 224)), int(size.get("width", 224))
    return PreprocessConfig(input_size=(h, w), interpolation=interpolation, crop_pct=1.0,
                            crop_mode="squash", mean=mean, std=std)
