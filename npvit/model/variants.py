"""Named variants, by timm's names: one table of configs, and the model class each config builds."""
from typing import Any

from .base import Model
from .config import SwinConfig, ViTConfig
from .timm_names import split_tag, tag_preprocess, tag_settings, translate_kwargs

_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
_H = dict(embed_dim=1280, depth=32, num_heads=16)
_IN21K = dict(num_classes=21843)

_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_SWIN_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_IN22K = dict(num_classes=21841)          # Swin's ImageNet-22k heads (ViT's 21k has 21843 classes)
_W12_384 = dict(img_size=384, window_size=12)

VARIANTS = {
    "vit_tiny_patch16_224": ViTConfig(**_TI, patch_size=16),
    "vit_small_patch16_224": ViTConfig(**_S, patch_size=16),
    "vit_base_patch16_224": ViTConfig(**_B, patch_size=16),
    "vit_base_patch32_224": ViTConfig(**_B, patch_size=32),
    "vit_large_patch16_224": ViTConfig(**_L, patch_size=16),
    "vit_large_patch32_224": ViTConfig(**_L, patch_size=32),
    "vit_base_patch16_224_in21k": ViTConfig(**_B, **_IN21K, patch_size=16, representation_size=768),
    "vit_base_patch32_224_in21k": ViTConfig(**_B, **_IN21K, patch_size=32, representation_size=768),
    "vit_large_patch16_224_in21k": ViTConfig(**_L, **_IN21K, patch_size=16, representation_size=1024),
    "vit_large_patch32_224_in21k": ViTConfig(**_L, **_IN21K, patch_size=32, representation_size=1024),
    "vit_huge_patch14_224_in21k": ViTConfig(**_H, **_IN21K, patch_size=14, representation_size=1280),
    "deit_tiny_patch16_224": ViTConfig(**_TI, patch_size=16),
    "deit_small_patch16_224": ViTConfig(**_S, patch_size=16),
    "deit_base_patch16_224": ViTConfig(**_B, patch_size=16),
    "deit_tiny_distilled_patch16_224": ViTConfig(**_TI, patch_size=16, distilled=True),
    "deit_small_distilled_patch16_224": ViTConfig(**_S, patch_size=16, distilled=True),
    "deit_base_distilled_patch16_224": ViTConfig(**_B, patch_size=16, distilled=True),
    "swin_tiny_patch4_window7_224": SwinConfig(**_SWIN_T),
    "swin_small_patch4_window7_224": SwinConfig(**_SWIN_S),
    "swin_base_patch4_window7_224": SwinConfig(**_SWIN_B),
    "swin_base_patch4_window12_384": SwinConfig(**_SWIN_B, **_W12_384),
    "swin_large_patch4_window7_224": SwinConfig(**_SWIN_L),
    "swin_large_patch4_window12_384": SwinConfig(**_SWIN_L, **_W12_384),
    "swin_base_patch4_window7_224_in22k": SwinConfig(**_SWIN_B, **_IN22K),
    "swin_base_patch4_window12_384_in22k": SwinConfig(**_SWIN_B, **_W12_384, **_IN22K),
    "swin_large_patch4_window7_224_in22k": SwinConfig(**_SWIN_L, **_IN22K),
    "swin_large_patch4_window12_384_in22k": SwinConfig(**_SWIN_L, **_W12_384, **_IN22K),
}


def list_models():
    return sorted(VARIANTS)


def variant_config(name, **overrides):
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return VARIANTS[name].replace(**overrides)


def model_class(config):
    """The model class a config builds (VisionTransformer for a ViTConfig, SwinTransformer for a SwinConfig)."""
    from .swin import SwinTransformer
    from .vit import VisionTransformer

    for model in (VisionTransformer, SwinTransformer):
        if isinstance(config, model.config_class):
            return model
    raise TypeError(f"no model is built from a {type(config).__name__}")


def create_model(name: str = "vit_base_patch16_224", dtype: str = "float32", backend: str = "numpy",
                 seed: int = 0, **overrides: Any) -> Model:
    """Build a named variant with its initialisation, reproducible from ``seed``.

    ``name`` is a name from ``list_models()``, optionally with one of timm's pretrained tags
    (``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``): the tag sets the class count and
    ``model.preprocess`` to that checkpoint's recipe (the weights come from ``npvit.load``).
    ``overrides`` are fields of the variant's config (``num_classes=10``, ``img_size=384``, ...),
    under npvit's names or timm's (``in_chans``, ``global_pool``, ``class_token``,
    ``drop_path_rate``, ...; see ``npvit.model.timm_names``); giving both spellings of one setting
    is an error.  ``dtype`` is "float32" or "float64", ``backend`` "numpy" or "cupy".
    """
    base, tag = split_tag(name, VARIANTS)
    settings = tag_settings(tag) if tag else {}
    settings.update(translate_kwargs(overrides, swin=isinstance(VARIANTS[base], SwinConfig)))
    cfg = variant_config(base, **settings)
    model = model_class(cfg)(cfg, dtype=dtype, backend=backend, seed=seed)
    if tag:
        model.preprocess = tag_preprocess(tag, cfg.img_size)
    return model
