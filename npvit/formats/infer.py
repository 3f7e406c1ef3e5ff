"""Read the architecture off a timm-named state dict: the shapes are the config.

    patch_embed.proj.weight (D, C, ph, pw)   -> embed_dim, in_c, patch_size
    blocks.<i>.*                             -> depth (0..n-1, no gaps)
    blocks.0.mlp.fc1.weight (hidden, D)      -> mlp_ratio = hidden / D
    blocks.0.attn.qkv.bias present?          -> qkv_bias
    pre_logits.fc.weight (R, D)              -> representation_size
    head.weight (K, F)                       -> num_classes (0 when absent)
    cls_token / dist_token present?          -> classifier 'token' (else 'gap') / distilled
    pos_embed (1, prefix + P, D)             -> P patch positions (the grid itself is not recorded)

Only what the shapes determine is returned; consistency of everything else is checked when the
arrays are loaded into the model (``load_state_dict``).
"""
import math

from .checkpoint import count_blocks
from .errors import CheckpointError

STRUCTURAL = ("embed_dim", "depth", "patch_size", "in_c", "mlp_ratio", "qkv_bias",
              "representation_size", "distilled", "classifier", "num_classes")


def infer_structure(state, source):
    """``(fields, num_patches)``: the STRUCTURAL ViTConfig fields and the position count."""
    def need(name, ndim):
        if name not in state:
            raise CheckpointError(f"{source}: no {name!r} among the weights; every ViT has one "
                                  "(the file is incomplete or not a ViT)")
        arr = state[name]
        if arr.ndim != ndim:
            raise CheckpointError(f"{source}: {name} has shape {arr.shape}, expected {ndim} dimensions")
        return arr

    D, C, ph, pw = need("patch_embed.proj.weight", 4).shape
    depth = count_blocks(state, "blocks.", ".norm1.weight")
    if depth == 0:
        raise CheckpointError(f"{source}: no transformer blocks found, expected blocks.0.* ...")
    hidden = need("blocks.0.mlp.fc1.weight", 2).shape[0]
    fields = dict(embed_dim=int(D), in_c=int(C), patch_size=(int(ph), int(pw)), depth=depth,
                  mlp_ratio=_ratio(hidden, D), qkv_bias="blocks.0.attn.qkv.bias" in state,
                  representation_size=(int(need("pre_logits.fc.weight", 2).shape[0])
                                       if "pre_logits.fc.weight" in state else None),
                  num_classes=int(need("head.weight", 2).shape[0]) if "head.weight" in state else 0,
                  distilled="dist_token" in state,
                  classifier="token" if "cls_token" in state else "gap")
    pe = need("pos_embed", 3)
    prefix = ("cls_token" in state) + ("dist_token" in state)
    patches = pe.shape[1] - prefix
    if pe.shape[0] != 1 or pe.shape[2] != D or patches <= 0:
        raise CheckpointError(f"{source}: pos_embed has shape {pe.shape}, expected (1, {prefix} + "
                              f"patches, {D})")
    return fields, patches


def _ratio(hidden, width):
    """mlp_ratio such that int(width * ratio) == hidden, as ViTConfig computes the hidden size."""
    ratio = hidden / width
    while int(width * ratio) < hidden:  # guard float rounding (e.g. 1000 / 384)
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def square_grid(patches):
    s = math.isqrt(patches)
    return (s, s) if s * s == patches else None
