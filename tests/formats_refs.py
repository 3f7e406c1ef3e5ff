"""Helpers for the checkpoint-format tests: real photos, randomised reference models, and a writer
of Google's official / big_vision .npz layouts built from a timm model.

The npz writer is the inverse of timm's ``_load_weights`` and is written here, in the test tree,
independently of npvit's reader; tests check it by loading its files back into timm.
"""
import functools
import os

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "data")

# Comparisons: float64 runs of the same math in two frameworks differ by summation order only
# (~1e-15 per op), so 1e-9 relative to the largest logit is loose for depth 2 and still fails on
# any wrong term.  float32: GEMM summation order over width 64 gives ~1e-7 relative per layer;
# 2e-5 of the largest logit leaves room for that, and a layout mistake is O(1).
TOL = {"float64": 1e-9, "float32": 2e-5}


@functools.lru_cache(maxsize=None)
def _photos(size):
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    out = []
    for name in ("chelsea.png", "coffee.png"):
        img = Image.open(os.path.join(DATA, name)).convert("RGB").resize((w, h), Image.BILINEAR)
        out.append(np.asarray(img, dtype=np.float64).transpose(2, 0, 1) / 127.5 - 1.0)
    return np.stack(out)


def photos(size, dtype="float32"):
    """chelsea.png and coffee.png resized (bilinear) to ``size`` and scaled to [-1, 1]: (2, 3, H, W)."""
    return _photos(size if isinstance(size, int) else tuple(size)).astype(dtype)


def assert_close(ours, ref, dtype, what="logits"):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= TOL[str(dtype)] * scale, f"{what}: max error {err:.3g}, max |ref| {scale:.3g}"


def randomize(module, seed=0, scale=0.2):
    """Random values for every parameter of a torch module (biases and LayerNorm affine too)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * scale
            is_norm_scale = p.ndim == 1 and any(s in name for s in ("norm", "ln", "layernorm")) \
                and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm_scale else noise)
    return module.eval()


TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def timm_vit(seed=0, gelu="exact", **kw):
    import timm.layers
    import torch
    from timm.models.vision_transformer import VisionTransformer

    args = dict(TINY, act_layer=timm.layers.GELUTanh if gelu == "tanh" else torch.nn.GELU)
    args.update(kw)
    return randomize(VisionTransformer(**args), seed)


def run_torch(model, x):
    import torch

    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    with torch.no_grad():
        out = model.to(dtype)(torch.from_numpy(x))
    return getattr(out, "logits", out).numpy()


# --- Google official / big_vision .npz writer (inverse of timm's _load_weights) -------------------
def flax_arrays(model, layout="official", prefix="", pre_logits=None):
    """The arrays of a Flax ViT checkpoint carrying ``model``'s (a timm ViT) weights.

    layout "official": Transformer/posembed_input (with the class slot), blocks MultiHeadDotProductAttention_1,
    LayerNorm_2, MlpBlock_3.  "big_vision": top-level pos_embedding (the model must have
    no_embed_class=True or no class token), MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0.
    "big_vision_stacked": the same with all blocks stacked on a leading axis.
    ``pre_logits``: optional (weight (R, D), bias (R,)) of a representation layer.
    """
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    D = sd["patch_embed.proj.weight"].shape[0]
    H = model.blocks[0].attn.num_heads
    hd = D // H
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
           "embedding/bias": sd["patch_embed.proj.bias"],
           "Transformer/encoder_norm/scale": sd["norm.weight"],
           "Transformer/encoder_norm/bias": sd["norm.bias"]}
    if "cls_token" in sd:
        out["cls"] = sd["cls_token"]
    if layout == "official":
        out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
        mha, ln2, mlp = "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
    else:
        out["pos_embedding"] = sd["pos_embed"]
        mha, ln2, mlp = "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    blocks = []
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        q, k, v = np.split(sd[b + "attn.qkv.weight"], 3)           # each (D_out, D_in)
        qb, kb, vb = np.split(sd[b + "attn.qkv.bias"], 3)
        blk = {"LayerNorm_0/scale": sd[b + "norm1.weight"], "LayerNorm_0/bias": sd[b + "norm1.bias"],
               f"{ln2}/scale": sd[b + "norm2.weight"], f"{ln2}/bias": sd[b + "norm2.bias"],
               f"{mha}/out/kernel": sd[b + "attn.proj.weight"].T.reshape(H, hd, D),
               f"{mha}/out/bias": sd[b + "attn.proj.bias"],
               f"{mlp}/Dense_0/kernel": sd[b + "mlp.fc1.weight"].T, f"{mlp}/Dense_0/bias": sd[b + "mlp.fc1.bias"],
               f"{mlp}/Dense_1/kernel": sd[b + "mlp.fc2.weight"].T, f"{mlp}/Dense_1/bias": sd[b + "mlp.fc2.bias"]}
        for n, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            blk[f"{mha}/{n}/kernel"] = w.T.reshape(D, H, hd)        # (in, heads, head_dim)
            blk[f"{mha}/{n}/bias"] = bias.reshape(H, hd)
        blocks.append(blk)
    if layout == "big_vision_stacked":
        for key in blocks[0]:
            out[f"Transformer/encoderblock/{key}"] = np.stack([blk[key] for blk in blocks])
    else:
        for i, blk in enumerate(blocks):
            for key, v in blk.items():
                out[f"Transformer/encoderblock_{i}/{key}"] = v
    if "head.weight" in sd:
        out["head/kernel"], out["head/bias"] = sd["head.weight"].T, sd["head.bias"]
    if pre_logits is not None:
        out["pre_logits/kernel"], out["pre_logits/bias"] = pre_logits[0].T, pre_logits[1]
    return {prefix + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def write_flax_npz(model, path, **kw):
    np.savez(path, **flax_arrays(model, **kw))
    return path


def timm_from_npz(path, **kw):
    """A fresh timm model loaded from ``path`` by timm's own official/big_vision npz loader."""
    from timm.models.vision_transformer import _load_weights

    m = timm_vit(seed=123, **kw)  # different weights: loading must overwrite every one
    _load_weights(m, path)
    return m.eval()


def torch_tail(features, pre_logits, head):
    """tanh(pre_logits(f)) then the head, in torch: the representation layer timm dropped."""
    import torch

    f = torch.tanh(torch.nn.functional.linear(features, *pre_logits))
    return torch.nn.functional.linear(f, *head)


