"""Google's Flax ViT ``.npz`` files: the original / AugReg releases and big_vision's.

Names are the Flax parameter tree joined with '/'.  Dense kernels are (in, out), the patch conv
kernel is HWIO, attention q/k/v kernels are (D, heads, head_dim) and out is (heads, head_dim, D):

    timm name                  official npz  (big_vision differences in brackets)     conversion
    patch_embed.proj.weight    embedding/kernel (ph, pw, C, D)                         transpose(3, 2, 0, 1)
    cls_token                  cls (1, 1, D)                                            [absent for 'gap']
    pos_embed                  Transformer/posembed_input/pos_embedding (1, 1+P, D)     has the class slot
                               [pos_embedding (1, P, D): added before the class token   zero class slot added]
    blocks.i.norm1.*           Transformer/encoderblock_i/LayerNorm_0/{scale,bias}
    blocks.i.attn.qkv.weight   MultiHeadDotProductAttention_1/{query,key,value}/kernel  (D,H,hd)->(D,D), .T, stacked
                               [MultiHeadDotProductAttention_0]
    blocks.i.attn.proj.weight  .../out/kernel (H, hd, D)                                reshape (D, D), .T
    blocks.i.norm2.*           LayerNorm_2 [LayerNorm_1]
    blocks.i.mlp.fc{1,2}.*     MlpBlock_3/Dense_{0,1} [MlpBlock_0]                      kernel.T
    norm.*                     Transformer/encoder_norm
    pre_logits.fc.*            pre_logits (ImageNet-21k files: the representation layer, then tanh)
    head.*                     head

big_vision may stack all blocks into ``Transformer/encoderblock/...`` with a leading depth axis.
Files may sit under a prefix: ``opt/target/`` (old trainer files), ``params/``, ``params/img/``.
Both codes use tanh-GELU, LayerNorm eps 1e-6, and resample position embeddings with
``scipy.ndimage.zoom(order=1)`` (linear, corner-aligned).
"""
import numpy as np

from .checkpoint import Arrays, Checkpoint, count_blocks
from .errors import CheckpointError

PREFIXES = ("", "opt/target/", "params/", "params/img/")


def find_prefix(arrays):
    """The prefix under which ``embedding/kernel`` sits, or None if this is not a Flax ViT file."""
    for prefix in PREFIXES:
        if prefix + "embedding/kernel" in arrays:
            return prefix
    return None


def read_flax(arrays, source):
    prefix = find_prefix(arrays)
    a = Arrays(arrays, source, prefix)
    if any(k.startswith(prefix + "MAPHead_0/") for k in arrays):
        raise CheckpointError(f"{source}: a big_vision model with an attention-pooling head "
                              "(MAPHead, pool_type='map'); npvit implements 'tok' and 'gap' pooling only")
    if a.has("block0/unit1/conv1/kernel") or a.has("conv_root/kernel"):
        raise CheckpointError(f"{source}: a hybrid ResNet+ViT checkpoint (conv_root, block*/unit*); "
                              "npvit implements the plain patch-embedding ViT only")

    stacked = a.has("Transformer/encoderblock/LayerNorm_0/scale")
    blk0 = "Transformer/encoderblock/" if stacked else "Transformer/encoderblock_0/"
    linen = a.has(blk0 + "MultiHeadDotProductAttention_0/query/kernel")
    if not linen and not a.has(blk0 + "MultiHeadDotProductAttention_1/query/kernel"):
        raise CheckpointError(f"{source}: has {prefix}embedding/kernel but no attention in "
                              f"{prefix}{blk0}: not a ViT checkpoint npvit knows")
    mha, ln2, mlp = (("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if linen
                     else ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"))
    top_posemb = a.has("pos_embedding")
    origin = "big_vision" if (linen or stacked or top_posemb) else "official"

    state = {}
    kernel = a.take("embedding/kernel", ndim=4)                      # (ph, pw, C, D)
    D = kernel.shape[3]
    state["patch_embed.proj.weight"] = _c(kernel.transpose(3, 2, 0, 1))  # (D, C, ph, pw)
    state["patch_embed.proj.bias"] = a.take("embedding/bias", shape=(D,))
    has_cls = a.has("cls")
    if has_cls:
        state["cls_token"] = a.take("cls", shape=(1, 1, D))

    if top_posemb:
        pe = a.take("pos_embedding", ndim=3)                         # (1, P, D), no class slot
        if has_cls:  # big_vision adds it before prepending cls: a zero slot does the same
            pe = np.concatenate([np.zeros((1, 1, D), pe.dtype), pe], axis=1)
    elif a.has("Transformer/posembed_input/pos_embedding"):
        pe = a.take("Transformer/posembed_input/pos_embedding", ndim=3)
    else:
        raise CheckpointError(f"{source}: no learned position embedding (pos_embedding); fixed "
                              "sin-cos embeddings (posemb='sincos2d') are not implemented in npvit")
    if pe.shape[0] != 1 or pe.shape[2] != D:
        raise CheckpointError(f"{source}: position embedding has shape {pe.shape}, expected (1, N, {D})")
    state["pos_embed"] = pe

    if stacked:
        depth = a.take("Transformer/encoderblock/LayerNorm_0/scale", ndim=2).shape[0]
    else:
        depth = count_blocks(arrays, prefix + "Transformer/encoderblock_", "/LayerNorm_0/scale")
    q0 = _block(a, stacked, 0, f"{mha}/query/kernel", 3)
    if q0.shape[0] != D or q0.shape[1] * q0.shape[2] != D:
        raise CheckpointError(f"{source}: query kernel has shape {q0.shape}, expected "
                              f"({D}, heads, head_dim) with heads * head_dim = {D}")
    heads = q0.shape[1]
    for i in range(depth):
        b = f"blocks.{i}."
        state[b + "norm1.weight"] = _block(a, stacked, i, "LayerNorm_0/scale", 1, (D,))
        state[b + "norm1.bias"] = _block(a, stacked, i, "LayerNorm_0/bias", 1, (D,))
        qkv = [_block(a, stacked, i, f"{mha}/{n}/kernel", 3, (D, heads, D // heads))
               for n in ("query", "key", "value")]
        state[b + "attn.qkv.weight"] = np.concatenate([k.reshape(D, D).T for k in qkv])  # (3D, D)
        state[b + "attn.qkv.bias"] = np.concatenate(
            [_block(a, stacked, i, f"{mha}/{n}/bias", 2, (heads, D // heads)).reshape(D)
             for n in ("query", "key", "value")])
        out = _block(a, stacked, i, f"{mha}/out/kernel", 3, (heads, D // heads, D))
        state[b + "attn.proj.weight"] = _c(out.reshape(D, D).T)          # (D_out, H*hd)
        state[b + "attn.proj.bias"] = _block(a, stacked, i, f"{mha}/out/bias", 1, (D,))
        state[b + "norm2.weight"] = _block(a, stacked, i, f"{ln2}/scale", 1, (D,))
        state[b + "norm2.bias"] = _block(a, stacked, i, f"{ln2}/bias", 1, (D,))
        fc1 = _block(a, stacked, i, f"{mlp}/Dense_0/kernel", 2)
        hidden = fc1.shape[1]
        state[b + "mlp.fc1.weight"] = _c(_block(a, stacked, i, f"{mlp}/Dense_0/kernel", 2, (D, hidden)).T)
        state[b + "mlp.fc1.bias"] = _block(a, stacked, i, f"{mlp}/Dense_0/bias", 1, (hidden,))
        state[b + "mlp.fc2.weight"] = _c(_block(a, stacked, i, f"{mlp}/Dense_1/kernel", 2, (hidden, D)).T)
        state[b + "mlp.fc2.bias"] = _block(a, stacked, i, f"{mlp}/Dense_1/bias", 1, (D,))
    state["norm.weight"] = a.take("Transformer/encoder_norm/scale", shape=(D,))
    state["norm.bias"] = a.take("Transformer/encoder_norm/bias", shape=(D,))
    if a.has("pre_logits/kernel"):
        state["pre_logits.fc.weight"] = _c(a.take("pre_logits/kernel", ndim=2).T)
        state["pre_logits.fc.bias"] = a.take("pre_logits/bias", ndim=1)
    if a.has("head/kernel"):
        state["head.weight"] = _c(a.take("head/kernel", ndim=2).T)
        state["head.bias"] = a.take("head/bias", ndim=1)
    a.refuse_unused(f"a {origin} ViT checkpoint")

    notes = []
    outside = [k for k in arrays if not k.startswith(prefix)]
    if outside:
        notes.append(f"ignored {len(outside)} arrays outside '{prefix}' (e.g. {outside[0]}): "
                     "optimizer state or other model parts")
    return Checkpoint(state=state, origin=origin, known={"num_heads": heads},
                      defaults={"gelu": "tanh", "norm_eps": 1e-6},
                      preprocess_preset="official", resample="linear_corners", notes=notes)


def _c(view):
    """(in, out) kernels become (out, in) here, once: NumPy's contiguous copy of a transposed view
    is faster than the strided copy the model would otherwise make of it."""
    return np.ascontiguousarray(view)


def _block(a, stacked, i, key, ndim, shape=None):
    """Block i's array: its own entry, or row i of the stacked (depth, ...) array."""
    if not stacked:
        return a.take(f"Transformer/encoderblock_{i}/{key}", ndim=ndim, shape=shape)
    arr = a.take(f"Transformer/encoderblock/{key}", ndim=ndim + 1)
    if arr.shape[0] <= i:
        raise CheckpointError(f"{a.source}: stacked array '{a.prefix}Transformer/encoderblock/{key}' "
                              f"has {arr.shape[0]} blocks, expected at least {i + 1}")
    if shape is not None and tuple(arr.shape[1:]) != tuple(shape):
        raise CheckpointError(f"{a.source}: stacked array '{a.prefix}Transformer/encoderblock/{key}' "
                              f"has shape {arr.shape}, expected (depth, {', '.join(map(str, shape))})")
    return arr[i]
