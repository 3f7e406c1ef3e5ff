"""``preprocess(images, cfg) -> (B, 3, H, W) float32``: the eval transform of timm, torchvision,
Hugging Face, the official JAX code or the seed, chosen by a ``PreprocessConfig``.

For an image of h x w pixels and ``cfg.input_size = (S_h, S_w)``:

center mode (timm ``transforms_imagenet_eval``, torchvision ``Resize`` + ``CenterCrop``):
    square target:   short side -> floor(S / crop_pct), long side -> int(that * long / short)
    other targets:   (R_h, R_w) = floor(S / crop_pct) per axis, r = min(h / R_h, w / R_w),
                     size -> (round(h / r), round(w / r))                 (timm ResizeKeepRatio)
    then crop S_h x S_w at top = int(round((h' - S_h) / 2)), left likewise.
squash mode:         resize to floor(S / crop_pct) per axis, then the same center crop
                     (crop_pct = 1: straight to S_h x S_w, as Hugging Face and the JAX code do).

Then x / 255 (uint8 sources; float sources are already in [0, 1]), (x - mean) / std, HWC -> CHW,
all in float32 in the same order as torchvision's ``ToTensor`` + ``Normalize``.
"""
import math

import numpy as np

from .config import PreprocessConfig
from .images import to_rgb_list
from .resize import resize


def preprocess(images, cfg=None):
    """Images (see ``npvit.preprocess.images``) -> normalised (B, 3, H, W) float32 array."""
    cfg = cfg if cfg is not None else PreprocessConfig()
    if not isinstance(cfg, PreprocessConfig):
        raise TypeError(f"cfg must be a PreprocessConfig (see npvit.preprocess.PRESETS), "
                        f"got {type(cfg).__name__}")
    return np.stack([transform_one(img, cfg) for img in to_rgb_list(images)])


def transform_one(img, cfg):
    """One (h, w, 3) RGB array (uint8 or float32 in [0, 1]) -> (3, S_h, S_w) float32."""
    h, w = img.shape[:2]
    size = resized_size(h, w, cfg)
    x = resize(img, size, cfg.interpolation, antialias=cfg.antialias)
    x = center_crop(x, cfg.input_size)                                       # (S_h, S_w, 3)
    x = x.astype(np.float32)
    if img.dtype == np.uint8:
        x = x / np.float32(255)
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))                       # (3, S_h, S_w)


def resized_size(h, w, cfg):
    """(height, width) the image is resized to before the center crop."""
    out_h, out_w = cfg.input_size
    scale_h = math.floor(out_h / cfg.crop_pct)
    scale_w = math.floor(out_w / cfg.crop_pct)
    if cfg.crop_mode == "squash":
        return scale_h, scale_w
    if scale_h == scale_w:
        # torchvision Resize(int): the short side gets the size, the long side is truncated.
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = scale_h, int(scale_h * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)
    ratio = min(h / scale_h, w / scale_w)
    return round(h / ratio), round(w / ratio)


def center_crop(img, size):
    """The central ``size = (height, width)`` window of an (H, W, C) image (torchvision offsets)."""
    H, W = img.shape[:2]
    ch, cw = size
    if ch > H or cw > W:
        raise ValueError(f"cannot crop {ch}x{cw} from a {H}x{W} image")
    top = int(round((H - ch) / 2.0))
    left = int(round((W - cw) / 2.0))
    return img[top:top + ch, left:left + cw]
