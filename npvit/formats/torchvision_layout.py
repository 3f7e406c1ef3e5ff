"""torchvision ``vit_*`` state dicts (``torchvision.models.VisionTransformer``).

    timm name             torchvision name
    cls_token             class_token
    pos_embed             encoder.pos_embedding (1, 1+P, D)
    patch_embed.proj.*    conv_proj.*
    blocks.i.norm1.*      encoder.layers.encoder_layer_i.ln_1.*
    blocks.i.attn.qkv.*   ...self_attention.in_proj_{weight,bias}   already [q; k; v] (3D, D)
    blocks.i.attn.proj.*  ...self_attention.out_proj.*
    blocks.i.norm2.*      ...ln_2.*
    blocks.i.mlp.fc1.*    ...mlp.0.*   (older files: mlp.linear_1)
    blocks.i.mlp.fc2.*    ...mlp.3.*   (older files: mlp.linear_2)
    norm.*                encoder.ln.*
    pre_logits.fc.*       heads.pre_logits.*   (then tanh, as heads.act)
    head.*                heads.head.*

LayerNorm eps 1e-6, exact GELU; heads are not recorded (variant table by width).
"""
from .checkpoint import Arrays, Checkpoint, count_blocks, heads_by_width


def is_torchvision(arrays):
    return "conv_proj.weight" in arrays or "class_token" in arrays


def read_torchvision(arrays, source):
    a = Arrays(arrays, source)
    state = {}
    w = a.take("conv_proj.weight", ndim=4)
    D = w.shape[0]
    state["patch_embed.proj.weight"] = w
    state["patch_embed.proj.bias"] = a.take("conv_proj.bias", shape=(D,))
    state["cls_token"] = a.take("class_token", shape=(1, 1, D))
    state["pos_embed"] = a.take("encoder.pos_embedding", ndim=3)
    depth = count_blocks(arrays, "encoder.layers.encoder_layer_", ".ln_1.weight")
    for i in range(depth):
        t, b = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        fc1, fc2 = ("mlp.0", "mlp.3") if a.has(t + "mlp.0.weight") else ("mlp.linear_1", "mlp.linear_2")
        for src, dst in (("ln_1", "norm1"), ("self_attention.out_proj", "attn.proj"), ("ln_2", "norm2"),
                         (fc1, "mlp.fc1"), (fc2, "mlp.fc2")):
            state[f"{b}{dst}.weight"] = a.take(f"{t}{src}.weight")
            state[f"{b}{dst}.bias"] = a.take(f"{t}{src}.bias")
        state[b + "attn.qkv.weight"] = a.take(t + "self_attention.in_proj_weight", shape=(3 * D, D))
        state[b + "attn.qkv.bias"] = a.take(t + "self_attention.in_proj_bias", shape=(3 * D,))
    state["norm.weight"] = a.take("encoder.ln.weight", shape=(D,))
    state["norm.bias"] = a.take("encoder.ln.bias", shape=(D,))
    if a.has("heads.pre_logits.weight"):
        state["pre_logits.fc.weight"] = a.take("heads.pre_logits.weight", ndim=2)
        state["pre_logits.fc.bias"] = a.take("heads.pre_logits.bias", ndim=1)
    if a.has("heads.head.weight"):
        state["head.weight"] = a.take("heads.head.weight", ndim=2)
        state["head.bias"] = a.take("heads.head.bias", ndim=1)
    a.refuse_unused("a torchvision ViT checkpoint")
    ckpt = Checkpoint(state=state, origin="torchvision", preprocess_preset="torchvision",
                      resample="bicubic", defaults={"norm_eps": 1e-6, "gelu": "exact"})
    if heads_by_width(D):
        ckpt.defaults["num_heads"] = heads_by_width(D)
    return ckpt
