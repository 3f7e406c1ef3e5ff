"""Named variants, by timm's names: one table of configs."""
from .config import ViTConfig

_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
_H = dict(embed_dim=1280, depth=32, num_heads=16)
_IN21K = dict(num_classes=21843)

VARIANTS = {
    "vit_tiny_patch16_224": dict(_TI, patch_size=16),
    "vit_small_patch16_224": dict(_S, patch_size=16),
    "vit_base_patch16_224": dict(_B, patch_size=16),
    "vit_base_patch32_224": dict(_B, patch_size=32),
    "vit_large_patch16_224": dict(_L, patch_size=16),
    "vit_large_patch32_224": dict(_L, patch_size=32),
    "vit_base_patch16_224_in21k": dict(_B, **_IN21K, patch_size=16, representation_size=768),
    "vit_base_patch32_224_in21k": dict(_B, **_IN21K, patch_size=32, representation_size=768),
    "vit_large_patch16_224_in21k": dict(_L, **_IN21K, patch_size=16, representation_size=1024),
    "vit_large_patch32_224_in21k": dict(_L, **_IN21K, patch_size=32, representation_size=1024),
    "vit_huge_patch14_224_in21k": dict(_H, **_IN21K, patch_size=14, representation_size=1280),
    "deit_tiny_patch16_224": dict(_TI, patch_size=16),
    "deit_small_patch16_224": dict(_S, patch_size=16),
    "deit_base_patch16_224": dict(_B, patch_size=16),
    "deit_tiny_distilled_patch16_224": dict(_TI, patch_size=16, distilled=True),
    "deit_small_distilled_patch16_224": dict(_S, patch_size=16, distilled=True),
    "deit_base_distilled_patch16_224": dict(_B, patch_size=16, distilled=True),
}


def list_models():
    return sorted(VARIANTS)


def variant_config(name, **overrides):
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return ViTConfig(**VARIANTS[name]).replace(**overrides)


def create_model(name="vit_base_patch16_224", dtype="float32", backend="numpy", seed=0, **overrides):
    """Build a named variant with the seed's initialisation, reproducible from ``seed``.

    ``overrides`` are any ViTConfig fields (``num_classes=10``, ``img_size=384``, ...).
    """
    from .vit import VisionTransformer

    return VisionTransformer(variant_config(name, **overrides), dtype=dtype, backend=backend, seed=seed)
