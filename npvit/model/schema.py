"""The parameters of each architecture: {state-dict name: shape}, in timm's order.

This is the single source of a model's parameter names (PyTorch's, so loading a checkpoint is a
rename table) and shapes: building, initialising, loading, saving and converting all read it.
"""


def parameter_shapes(config):
    """The schema of whichever architecture ``config`` describes."""
    return config.parameter_shapes()


def block_shapes(prefix, dim, hidden, qkv_bias=True):
    """One pre-norm transformer block (ViT and Swin share these names)."""
    shapes = {
        prefix + "norm1.weight": (dim,),
        prefix + "norm1.bias": (dim,),
        prefix + "attn.qkv.weight": (3 * dim, dim),
    }
    if qkv_bias:
        shapes[prefix + "attn.qkv.bias"] = (3 * dim,)
    shapes.update({
        prefix + "attn.proj.weight": (dim, dim),
        prefix + "attn.proj.bias": (dim,),
        prefix + "norm2.weight": (dim,),
        prefix + "norm2.bias": (dim,),
        prefix + "mlp.fc1.weight": (hidden, dim),
        prefix + "mlp.fc1.bias": (hidden,),
        prefix + "mlp.fc2.weight": (dim, hidden),
        prefix + "mlp.fc2.bias": (dim,),
    })
    return shapes


def vit_parameter_shapes(cfg):
    """VisionTransformer (timm's names; DeiT's distillation token and head included)."""
    D, (ph, pw) = cfg.embed_dim, cfg.patch_size
    shapes = {}
    if cfg.classifier == "token":
        shapes["cls_token"] = (1, 1, D)
    if cfg.distilled:
        shapes["dist_token"] = (1, 1, D)
    shapes["pos_embed"] = (1, cfg.num_patches + cfg.num_prefix_tokens, D)
    shapes["patch_embed.proj.weight"] = (D, cfg.in_c, ph, pw)
    shapes["patch_embed.proj.bias"] = (D,)
    for i in range(cfg.depth):
        shapes.update(block_shapes(f"blocks.{i}.", D, cfg.mlp_hidden, cfg.qkv_bias))
    shapes["norm.weight"] = (D,)
    shapes["norm.bias"] = (D,)
    if cfg.representation_size:
        shapes["pre_logits.fc.weight"] = (cfg.representation_size, D)
        shapes["pre_logits.fc.bias"] = (cfg.representation_size,)
    if cfg.num_classes:
        shapes["head.weight"] = (cfg.num_classes, cfg.num_features)
        shapes["head.bias"] = (cfg.num_classes,)
        if cfg.distilled:
            shapes["head_dist.weight"] = (cfg.num_classes, D)
            shapes["head_dist.bias"] = (cfg.num_classes,)
    return shapes
