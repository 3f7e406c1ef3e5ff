"""timm's spellings for ``create_model``: keyword names and pretrained tags.

Keywords (timm -> npvit; a setting given in both spellings is an error):

    ViT                                     Swin (already timm's names, except in_c)
    in_chans        -> in_c                 in_chans -> in_c
    global_pool     "token" -> classifier="token", "avg" -> classifier="gap"   (Swin: "avg" only)
    class_token     True -> "token", False -> "gap"                            (Swin: False only)
    drop_path_rate  -> drop_path_ratio
    attn_drop_rate  -> attn_drop_ratio
    proj_drop_rate, pos_drop_rate -> drop_ratio   (npvit's ViT has one rate for both, as the seed)
    drop_rate       current timm drops before the head (head_drop); npvit's ViT has none, so only 0
    qkv_bias, mlp_ratio, img_size, patch_size, embed_dim, depth, num_heads, num_classes: the same
    pretrained=False is accepted (npvit never downloads; load files with npvit.load)

npvit's ``gap`` takes the final LayerNorm before the mean, i.e. timm's ``global_pool="avg",
fc_norm=False``; timm's ``fc_norm=True`` is not implemented and refused.

Tags: ``vit_base_patch16_224.augreg2_in21k_ft_in1k`` builds ``vit_base_patch16_224`` with the
class count and preprocessing of that pretrained configuration (``PRETRAINED_TAGS``, checked
against timm's own registry by the tests).  The weights themselves come from ``npvit.load``.
"""
# tag -> (classes, normalisation, crop_pct at 224): timm's pretrained_cfg for the tags npvit's variants
# have; the normalisation is named here and looked up when a model is built (``tag_preprocess``),
# so that ``import npvit`` does not load the preprocessing package.
_RECIPES = {
    "augreg2_in21k_ft_in1k": (1000, "inception", 0.9),
    "augreg_in1k": (1000, "inception", 0.9),
    "augreg_in21k": (21843, "inception", 0.9),
    "augreg_in21k_ft_in1k": (1000, "inception", 0.9),
    "orig_in21k": (0, "inception", 0.9),            # timm ships it without a head
    "orig_in21k_ft_in1k": (1000, "inception", 0.9),
    "sam_in1k": (1000, "inception", 0.9),
    "bamboo": (115217, "clip", 1.0),
    "dino": (0, "imagenet", 0.9),
    "mae": (0, "imagenet", 0.9),
    "fb_in1k": (1000, "imagenet", 0.9),
    "ms_in1k": (1000, "imagenet", 0.9),
    "ms_in22k": (21841, "imagenet", 0.9),
    "ms_in22k_ft_in1k": (1000, "imagenet", 0.9),
}
_AUGREG = ("augreg_in21k", "augreg_in21k_ft_in1k")
_SWIN = ("ms_in1k", "ms_in22k", "ms_in22k_ft_in1k")
PRETRAINED_TAGS = {
    "vit_tiny_patch16_224": _AUGREG,
    "vit_small_patch16_224": ("augreg_in1k",) + _AUGREG + ("dino",),
    "vit_base_patch16_224": ("augreg2_in21k_ft_in1k", "augreg_in1k") + _AUGREG
                            + ("bamboo", "dino", "mae", "orig_in21k", "orig_in21k_ft_in1k", "sam_in1k"),
    "vit_base_patch32_224": ("augreg_in1k",) + _AUGREG + ("orig_in21k", "sam_in1k"),
    "vit_large_patch16_224": _AUGREG + ("mae", "orig_in21k"),
    "vit_large_patch32_224": ("orig_in21k",),
    "deit_tiny_patch16_224": ("fb_in1k",),
    "deit_small_patch16_224": ("fb_in1k",),
    "deit_base_patch16_224": ("fb_in1k",),
    "deit_tiny_distilled_patch16_224": ("fb_in1k",),
    "deit_small_distilled_patch16_224": ("fb_in1k",),
    "deit_base_distilled_patch16_224": ("fb_in1k",),
    "swin_tiny_patch4_window7_224": _SWIN,
    "swin_small_patch4_window7_224": _SWIN,
    "swin_base_patch4_window7_224": _SWIN,
    "swin_base_patch4_window12_384": _SWIN,
    "swin_large_patch4_window7_224": _SWIN[1:],
    "swin_large_patch4_window12_384": _SWIN[1:],
}


def split_tag(name, known):
    """``(variant, tag or None)`` of ``name``; an unknown variant or tag is a ValueError."""
    base, dot, tag = name.partition(".")
    if base not in known:
        raise ValueError(f"unknown model {base!r}; known models: {', '.join(sorted(known))}")
    if not dot:
        return base, None
    tags = PRETRAINED_TAGS.get(base, ())
    if tag not in tags:
        have = f"its tags: {', '.join(tags)}" if tags else "it has no pretrained tags"
        raise ValueError(f"unknown pretrained tag {tag!r} for {base} ({have})")
    return base, tag


def tag_settings(tag):
    """The config settings a tag fixes (the class count)."""
    return {"num_classes": _RECIPES[tag][0]}


def tag_preprocess(tag, img_size):
    """timm's eval preprocessing for a tag at ``img_size`` (bicubic, center crop; no crop above 224)."""
    from ..preprocess import config

    stats = {"inception": (config.INCEPTION_MEAN, config.INCEPTION_STD),
             "imagenet": (config.IMAGENET_MEAN, config.IMAGENET_STD),
             "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}
    _, norm, crop_pct = _RECIPES[tag]
    mean, std = stats[norm]
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return config.PreprocessConfig(input_size=size, interpolation="bicubic", crop_mode="center",
                                   crop_pct=crop_pct if max(size) <= 224 else 1.0, mean=mean, std=std)


_SAME = ("qkv_bias", "mlp_ratio", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes")


def translate_kwargs(kwargs, swin):
    """timm's keyword names -> the config's field names; the rest passes through unchanged."""
    kw = dict(kwargs)
    out = {}

    def move(timm_name, ours, value=None):
        if timm_name not in kw:
            return
        v = kw.pop(timm_name) if value is None else value(kw.pop(timm_name))
        if ours in kw or ours in out:
            raise TypeError(f"{timm_name} (timm's name) and {ours} set the same thing: give one of them")
        out[ours] = v

    if "pretrained" in kw:
        if kw.pop("pretrained"):
            raise ValueError("npvit does not download weights: build the model from a file with "
                             "npvit.load(path) (the README says where checkpoints come from)")
    move("in_chans", "in_c")
    if kw.pop("fc_norm", None):
        raise ValueError("fc_norm=True (a LayerNorm after pooling) is not implemented: npvit's average "
                         "pooling normalises before the mean (timm's fc_norm=False)")
    pool, token = kw.pop("global_pool", None), kw.pop("class_token", None)
    if swin:
        if pool not in (None, "avg") or token:
            raise ValueError(f"Swin pools by the mean of its last stage: global_pool must be 'avg' "
                             f"and class_token False (got global_pool={pool!r}, class_token={token!r})")
    elif pool is not None or token is not None:
        if pool not in (None, "token", "avg"):
            raise ValueError(f"global_pool={pool!r} is not implemented; npvit pools by the class token "
                             "('token') or by the mean of the patch tokens ('avg')")
        if (pool == "avg" and token) or (pool == "token" and token is False):
            raise ValueError(f"global_pool={pool!r} with class_token={token!r}: npvit's 'avg' has no class "
                             "token and 'token' pools by it")
        if "classifier" in kw:
            raise TypeError("global_pool/class_token (timm's names) and classifier set the same thing: "
                            "give one of them")
        out["classifier"] = "gap" if pool == "avg" or token is False else "token"
    if not swin:
        if kw.get("drop_rate"):
            raise ValueError(f"drop_rate={kw['drop_rate']} is timm's dropout before the head, which "
                             "npvit's ViT does not have; timm's proj_drop_rate / pos_drop_rate are npvit's "
                             "drop_ratio (one rate for both)")
        kw.pop("drop_rate", None)
        proj, pos = kw.pop("proj_drop_rate", None), kw.pop("pos_drop_rate", None)
        if proj is not None and pos is not None and proj != pos:
            raise ValueError(f"proj_drop_rate={proj} and pos_drop_rate={pos} differ: npvit's ViT has one "
                             "rate for both (drop_ratio)")
        if proj is not None or pos is not None:
            if "drop_ratio" in kw:
                raise TypeError("proj_drop_rate/pos_drop_rate (timm's names) and drop_ratio set the same "
                                "thing: give one of them")
            out["drop_ratio"] = proj if proj is not None else pos
        move("attn_drop_rate", "attn_drop_ratio")
        move("drop_path_rate", "drop_path_ratio")
    for k in list(kw):
        out[k] = kw.pop(k)
    return out
