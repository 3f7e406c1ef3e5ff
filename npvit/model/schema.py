"""The parameters of each architecture: {state-dict name: shape}, in timm's order.

This is the single source of a model's parameter names (PyTorch's, so loading a checkpoint is a
rename table) and shapes: building, initialising, loading, saving and converting all read it.
"""


def parameter_shapes(config):
    """The schema of whichever architecture ``config`` describes."""
    return config.parameter_shapes()


def block_shapes(prefix, dim, hidden, qkv_bias=True, attn_extra=None):
    """One pre-norm transformer block (ViT and Swin share these names); ``attn_extra``: more
    attention parameters (Swin's relative position table), after norm1 as in timm."""
    shapes = {prefix + "norm1.weight": (dim,), prefix + "norm1.bias": (dim,)}
    shapes.update({prefix + k: v for k, v in (attn_extra or {}).items()})
    shapes[prefix + "attn.qkv.weight"] = (3 * dim, dim)
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


def swin_parameter_shapes(cfg):
    """SwinTransformer (timm's current names: patch merging at the start of stages 1-3, ``head.fc``)."""
    C0, (ph, pw) = cfg.embed_dim, cfg.patch_size
    shapes = {"patch_embed.proj.weight": (C0, cfg.in_c, ph, pw), "patch_embed.proj.bias": (C0,)}
    if cfg.patch_norm:
        shapes["patch_embed.norm.weight"] = (C0,)
        shapes["patch_embed.norm.bias"] = (C0,)
    if cfg.ape:
        shapes["absolute_pos_embed"] = (1, cfg.num_patches, C0)
    for i, depth in enumerate(cfg.depths):
        C = cfg.stage_dim(i)
        if i > 0:
            shapes[f"layers.{i}.downsample.norm.weight"] = (2 * C,)
            shapes[f"layers.{i}.downsample.norm.bias"] = (2 * C,)
            shapes[f"layers.{i}.downsample.reduction.weight"] = (C, 2 * C)
        (wh, ww), _ = cfg.stage_window(i)
        table = {"attn.relative_position_bias_table": ((2 * wh - 1) * (2 * ww - 1), cfg.num_heads[i])}
        for j in range(depth):
            shapes.update(block_shapes(f"layers.{i}.blocks.{j}.", C, cfg.mlp_hidden[i], cfg.qkv_bias, table))
    shapes["norm.weight"] = (cfg.num_features,)
    shapes["norm.bias"] = (cfg.num_features,)
    if cfg.num_classes:
        shapes["head.fc.weight"] = (cfg.num_classes, cfg.num_features)
        shapes["head.fc.bias"] = (cfg.num_classes,)
    return shapes
