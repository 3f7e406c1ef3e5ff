"""One dataclass per architecture holds its every knob: ViTConfig (the seed's constructor, plus a few)
and SwinConfig (timm's), on a shared base for what any image model has: image and patch sizes,
input channels, classes and their names, the GELU form, LayerNorm eps, dropout rates."""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

from ..ops.activations import GELU_KINDS
from .schema import swin_parameter_shapes, vit_parameter_shapes

Size = Union[int, Tuple[int, int]]
CLASSIFIERS = ("token", "gap")


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(a) for a in v)


class ImageModelConfig:
    """What ViTConfig and SwinConfig share (their dataclass fields are their own)."""

    name = "model"       # in error messages: "invalid ViT config"
    dropout_fields = ()  # the fields that are dropout rates

    def __post_init__(self):
        self.img_size = _pair(self.img_size)
        self.patch_size = _pair(self.patch_size)
        if self.label_names is not None:
            self.label_names = tuple(str(n) for n in self.label_names)
        self.validate()

    @property
    def grid_size(self):
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])

    @property
    def num_patches(self):
        return self.grid_size[0] * self.grid_size[1]

    def _bad(self, msg):
        raise ValueError(f"invalid {self.name} config: {msg}")

    def validate(self):
        """The checks every architecture needs; a subclass adds its own."""
        bad = self._bad
        (H, W), (ph, pw) = self.img_size, self.patch_size
        if min(H, W, ph, pw) <= 0:
            bad(f"img_size {self.img_size} and patch_size {self.patch_size} must be positive")
        if H % ph or W % pw:
            bad(f"patch_size {self.patch_size} must divide img_size {self.img_size}; "
                f"pick an image size that is a multiple of the patch size")
        for name in ("in_c", "embed_dim"):
            if int(getattr(self, name)) <= 0:
                bad(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_classes < 0:
            bad(f"num_classes must be >= 0 (0 returns features), got {self.num_classes}")
        if self.gelu not in GELU_KINDS:
            bad(f"gelu must be one of {GELU_KINDS}, got {self.gelu!r}")
        for name in self.dropout_fields:
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            bad(f"norm_eps must be a positive number, got {self.norm_eps}")
        if self.label_names is not None and self.num_classes and len(self.label_names) != self.num_classes:
            bad(f"{len(self.label_names)} label names for a {self.num_classes}-class head")

    def replace(self, **overrides):
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown model setting(s) {sorted(unknown)}; known: "
                            f"{sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self):
        """The fields as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d):
        return cls().replace(**d)


@dataclass
class ViTConfig(ImageModelConfig):
    img_size: Size = 224
    patch_size: Size = 16
    in_c: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    representation_size: Optional[int] = None
    distilled: bool = False
    drop_ratio: float = 0.0
    attn_drop_ratio: float = 0.0
    drop_path_ratio: float = 0.0
    norm_eps: float = 1e-6
    gelu: str = "exact"
    classifier: str = "token"
    label_names: Optional[tuple] = field(default=None, compare=False)

    name = "ViT"
    dropout_fields = ("drop_ratio", "attn_drop_ratio", "drop_path_ratio")

    # --- derived sizes -------------------------------------------------------------
    @property
    def num_prefix_tokens(self):
        return (self.classifier == "token") + bool(self.distilled)

    @property
    def head_dim(self):
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self):
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def scale(self):
        return self.qk_scale if self.qk_scale is not None else self.head_dim ** -0.5

    @property
    def num_features(self):
        """Width of the pooled feature the head reads (the representation size when present)."""
        return self.representation_size or self.embed_dim

    def parameter_shapes(self):
        """{state-dict name: shape} of a ViT with this config (model/schema.py)."""
        return vit_parameter_shapes(self)

    def validate(self):
        super().validate()
        bad = self._bad
        for name in ("depth", "num_heads"):
            if int(getattr(self, name)) <= 0:
                bad(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            bad(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.mlp_hidden <= 0:
            bad(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")
        if self.classifier not in CLASSIFIERS:
            bad(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.distilled and self.classifier != "token":
            bad("a distilled model reads its class and distillation tokens: use classifier='token'")
        if self.distilled and self.representation_size:
            bad("distilled models have no representation layer: set representation_size=None")
        if self.distilled and self.num_classes == 0:
            bad("distilled models need a head: num_classes must be > 0")


WINDOW_RULES = ("timm", "hf")


@dataclass
class SwinConfig(ImageModelConfig):
    """The Swin Transformer's knobs, with timm's names and defaults (``swin_tiny_patch4_window7_224``).

    ``window_rule`` says how a stage whose grid is not a multiple of the window, or not larger than
    it, is laid out: "timm" clips the window to the grid per axis (no shift along a clipped axis)
    and shifts before padding; "hf" (Hugging Face, the original code) clips both axes to the
    smaller side of the grid once it is not larger than the window (no shift at all) and pads
    before shifting.  On the standard sizes (224 and 384 with windows 7 and 12) the two agree.
    """
    img_size: Size = 224
    patch_size: Size = 4
    in_c: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    drop_rate: float = 0.0          # dropout after pooling, before the head (timm)
    proj_drop_rate: float = 0.0     # dropout after the attention projection and in the MLP
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1     # timm's default; rates grow linearly over all blocks
    ape: bool = False               # absolute position embedding (the original's option)
    patch_norm: bool = True
    norm_eps: float = 1e-5
    gelu: str = "exact"
    window_rule: str = "timm"
    label_names: Optional[tuple] = field(default=None, compare=False)

    name = "Swin"
    dropout_fields = ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        super().__post_init__()

    # --- derived sizes -------------------------------------------------------------
    @property
    def num_stages(self):
        return len(self.depths)

    def stage_dim(self, i):
        return self.embed_dim * 2 ** i

    def stage_grid(self, i):
        """Token grid (H, W) of stage ``i``: each patch merging halves it, rounding up."""
        h, w = self.grid_size
        for _ in range(i):
            h, w = -(-h // 2), -(-w // 2)
        return (h, w)

    def stage_window(self, i):
        """(window, shift of the odd blocks) of stage ``i`` under ``window_rule``."""
        grid, ws = self.stage_grid(i), self.window_size
        if self.window_rule == "hf":
            if min(grid) <= ws:
                return (min(grid),) * 2, (0, 0)
            return (ws, ws), (ws // 2, ws // 2)
        window = tuple(min(r, ws) for r in grid)
        shift = tuple(0 if r <= ws else ws // 2 for r in grid)
        return window, shift

    def scale(self, i):
        return self.qk_scale if self.qk_scale is not None else (self.stage_dim(i) // self.num_heads[i]) ** -0.5

    @property
    def num_features(self):
        return self.stage_dim(self.num_stages - 1)

    @property
    def mlp_hidden(self):
        return [int(self.stage_dim(i) * self.mlp_ratio) for i in range(self.num_stages)]

    def parameter_shapes(self):
        """{state-dict name: shape} of a Swin Transformer with this config (model/schema.py)."""
        return swin_parameter_shapes(self)

    def validate(self):
        bad = self._bad
        if not self.depths or len(self.depths) != len(self.num_heads):
            bad(f"depths {self.depths} and num_heads {self.num_heads} need one entry per stage")
        if min(self.depths) <= 0 or min(self.num_heads) <= 0:
            bad(f"depths {self.depths} and num_heads {self.num_heads} must be positive")
        super().validate()
        if int(self.window_size) <= 0:
            bad(f"window_size must be a positive integer, got {self.window_size}")
        for i, heads in enumerate(self.num_heads):
            if self.stage_dim(i) % heads:
                bad(f"stage {i} width {self.stage_dim(i)} is not divisible by its {heads} heads")
        if min(self.mlp_hidden) <= 0:
            bad(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")
        if self.window_rule not in WINDOW_RULES:
            bad(f"window_rule must be one of {WINDOW_RULES}, got {self.window_rule!r}")
        if self.window_rule == "hf":
            small = [i for i in range(self.num_stages) if min(self.stage_grid(i)) < self.window_size]
            if small:
                bad(f"stage {small[0]}'s grid {self.stage_grid(small[0])} is smaller than the window "
                    f"{self.window_size}, which Hugging Face's Swin cannot run (its position bias is "
                    "sized for the full window): use window_rule='timm' or a larger image")
