"""How a checkpoint's own framework prepared its images, as one small dataclass.

crop_mode "center": resize the short side to floor(size / crop_pct), then center-crop ``input_size``
                    (timm, DeiT, torchvision, the seed).
crop_mode "squash": resize straight to ``input_size``, aspect ratio not kept (official JAX code,
                    Hugging Face ViTImageProcessor).
Pixels are scaled to [0, 1] and then normalised with ``mean``/``std``.

antialias True:  Pillow's ``Image.resize`` (filter widened when shrinking, uint8 after each pass),
                 which timm, torchvision, Hugging Face and the seed all use.
antialias False: ``tf.image.resize`` (bilinear at half-pixel centres, no widening, float result),
                 the official JAX input pipeline.
"""
import dataclasses
from dataclasses import dataclass
from typing import Tuple

INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    input_size: Tuple[int, int] = (224, 224)
    interpolation: str = "bicubic"     # "bicubic" | "bilinear"
    crop_pct: float = 0.9
    crop_mode: str = "center"          # "center" | "squash"
    mean: Tuple[float, float, float] = INCEPTION_MEAN
    std: Tuple[float, float, float] = INCEPTION_STD
    antialias: bool = True

    def __post_init__(self):
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {self.interpolation!r}")
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be 'center' or 'squash', got {self.crop_mode!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if not self.antialias and self.interpolation != "bilinear":
            raise ValueError("antialias=False (TF-style resize) is implemented for bilinear only")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        for k in ("input_size", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def preset(name, input_size=(224, 224)):
    """The recipe of a framework, at ``input_size`` (an int for a square, or (height, width)).

    Above 224 pixels the frameworks' checkpoints crop nothing: every timm ViT and DeiT
    pretrained config at 384 has crop_pct 1.0, and torchvision's SWAG weights (384, 518) resize
    straight to the crop size with bicubic.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}")
    size = (int(input_size),) * 2 if isinstance(input_size, int) else tuple(int(v) for v in input_size)
    cfg = PRESETS[name].replace(input_size=size)
    if max(size) > 224 and name in LARGE_INPUT:
        cfg = cfg.replace(**LARGE_INPUT[name])
    return cfg


PRESETS = {
    # google-research/vision_transformer: tf.image.resize to SxS (bilinear, no antialiasing),
    # scale to [-1, 1].
    "official": PreprocessConfig(interpolation="bilinear", crop_pct=1.0, crop_mode="squash",
                                 antialias=False),
    # timm ViT default cfg: bicubic, crop_pct 0.9, mean = std = 0.5.
    "timm": PreprocessConfig(),
    # DeiT (timm's deit cfg): bicubic, crop_pct 0.9, ImageNet mean/std.
    "deit": PreprocessConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # Hugging Face ViTImageProcessor: direct bilinear resize, mean = std = 0.5.
    "hf": PreprocessConfig(interpolation="bilinear", crop_pct=1.0, crop_mode="squash"),
    # torchvision IMAGENET1K_V1: Resize(256) bilinear, CenterCrop(224), ImageNet mean/std.
    "torchvision": PreprocessConfig(interpolation="bilinear", crop_pct=0.875, mean=IMAGENET_MEAN,
                                    std=IMAGENET_STD),
    # The seed's predict.py: Resize(256), CenterCrop(224), mean = std = 0.5.
    "seed": PreprocessConfig(interpolation="bilinear", crop_pct=0.875),
}

# Changes to a preset when the input is larger than 224 pixels (see ``preset``).
LARGE_INPUT = {
    "timm": dict(crop_pct=1.0),
    "deit": dict(crop_pct=1.0),
    "torchvision": dict(crop_pct=1.0, interpolation="bicubic"),
}
