"""Whatever the user calls an image, turned into an (H, W, 3) RGB array.

Accepted, alone or in a list (or a (B, H, W, C) array, one image per entry):
- a file path (str or ``pathlib.Path``), decoded with Pillow (``pip install 'npvit[image]'``);
- a ``PIL.Image.Image`` of any mode, converted with ``.convert("RGB")`` as timm does (16-bit and
  floating-point modes are scaled instead, see below);
- an (H, W, 3) uint8 array; (H, W) or (H, W, 1) grey, repeated to 3 channels; (H, W, 4) RGBA,
  whose alpha is dropped (what Pillow's RGBA -> RGB conversion does);
- an integer array with values 0..255 (any integer dtype), taken as uint8;
- a floating-point array with values in [0, 1] (1.0 = white), kept as float32 so no precision is
  lost to 256 levels.

Returns uint8 arrays for 8-bit sources and float32 arrays for float ones, and for 16-bit and
floating-point pictures (Pillow modes I;16, I, F), which are scaled to [0, 1] rather than clipped
to white by an 8-bit conversion (``pil_to_rgb``). Pillow is imported only to read files and PIL
images; arrays never need it. EXIF orientation is not applied (timm's and torchvision's loaders do
not apply it either). A file Pillow refuses (unknown, corrupt, a decompression bomb) is a
ValueError naming the file.
"""
import os
import struct
from pathlib import Path

import numpy as np

PILLOW_HINT = "pip install 'npvit[image]'"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".jfif")


def import_pillow():
    """``PIL.Image``, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"reading image files and PIL images needs Pillow: {PILLOW_HINT} "
                          "(or pass the pixels as a NumPy array)") from exc
    return Image


def is_batch(images):
    """True for a list/tuple of images or a (B, H, W, C) array; False for a single image."""
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, np.ndarray) and images.ndim == 4


def to_rgb_list(images):
    """A list of RGB arrays (uint8 or float32, (H, W, 3)) from one image or a batch of them."""
    items = list(images) if is_batch(images) else [images]
    if not items:
        raise ValueError("no images given: pass a path, a PIL image, an array, or a list of them")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(to_rgb(item))
        except (TypeError, ValueError) as exc:
            if len(items) == 1:
                raise
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"image {i}: {exc}") from exc
    return out


def to_rgb(image):
    """One image as an (H, W, 3) array: uint8 for 8-bit sources, float32 in [0, 1] for floats
    and for 16-bit and floating-point pictures."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if _is_pil_image(image):
        return pil_to_rgb(image)
    if isinstance(image, (list, tuple)):
        raise TypeError("nested lists are not images: pass a NumPy array, a path or a PIL image")
    if isinstance(image, (bytes, bytearray)):
        raise TypeError("got raw bytes: save them to a file and pass its path, or decode them "
                        "with PIL.Image.open(io.BytesIO(data))")
    if not hasattr(image, "__array__") and not isinstance(image, np.ndarray):
        raise TypeError(f"cannot read an image from a {type(image).__name__}: pass a file path, "
                        "a PIL image, or an (H, W, 3) array")
    return _array_to_rgb(np.asarray(image))


def read_image(path):
    """Decode an image file with Pillow into an (H, W, 3) uint8 array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image: pass the folder alone "
                                "(model.predict('folder/') predicts each image file in it) or its files")
    Image = import_pillow()
    try:
        with Image.open(path) as im:
            return pil_to_rgb(im, _bits_of(im))
    except Image.UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image file Pillow can read "
                         "(expected JPEG, PNG, BMP, GIF, TIFF, WebP, ...)") from exc
    except Image.DecompressionBombError as exc:  # not an OSError: caught by name
        raise ValueError(f"{path}: refused as a decompression bomb ({exc}); raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust this file") from exc
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:  # truncated or corrupt data
        raise ValueError(f"{path}: could not decode the image ({exc})") from exc


# Pillow modes whose values are not 8-bit: 16-bit grey (PNG, TIFF), 32-bit integers, 32-bit floats.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _bits_of(im):
    """16 if the file's decoder reads 16-bit samples (a 16-bit PNG opened as mode "I" by older
    Pillows), else None; must be asked before the pixels are loaded."""
    for tile in getattr(im, "tile", None) or ():
        raw = tile[3] if not hasattr(tile, "args") else tile.args
        raw = raw[0] if isinstance(raw, tuple) and raw else raw
        if isinstance(raw, str) and "16" in raw:
            return 16
    return None


def pil_to_rgb(im, bits=None):
    """A PIL image as (H, W, 3): uint8 for 8-bit modes (``convert("RGB")``, as timm does), float32
    in [0, 1] for 16-bit and float pictures, which ``convert("RGB")`` would clip at 255 (white).

    Modes I;16, I and F hold numbers whose scale Pillow does not record.  ``bits=16`` (the file's
    decoder read 16-bit samples: 16-bit PNG and TIFF) means 0..65535.  Otherwise the values say:
    0..255 integers are Pillow's own 8-bit scale and give exactly what ``convert("RGB")`` gives;
    floats in [0, 1] are taken as they are, floats up to 255 are divided by 255; values up to
    65535 are 16-bit; anything else is refused.
    """
    if im.mode not in _WIDE_MODES:
        return np.asarray(im.convert("RGB"))
    a = np.asarray(im).astype(np.float64)                                     # (H, W)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"a mode {im.mode} image of shape {a.shape}, expected (height, width) pixels")
    if not np.isfinite(a).all():
        raise ValueError(f"a mode {im.mode} image holding NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if bits != 16 and (lo < 0 or hi > 65535):
        raise ValueError(f"a mode {im.mode} image with values {lo:g}..{hi:g}: expected 0..1 (floats), "
                         "0..255 or 0..65535; rescale it to floats in [0, 1]")
    if bits != 16 and hi <= 255 and im.mode != "F":
        return np.asarray(im.convert("RGB"))                                  # 8-bit values already
    if bits == 16 or hi > 255:
        scale = 65535.0
    else:
        scale = 1.0 if hi <= 1.0 else 255.0
    grey = (a / scale).astype(np.float32)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))      # (H, W, 3)


def _is_pil_image(obj):
    # Checked by duck type first so that no PIL import is needed for arrays.
    if not (hasattr(obj, "convert") and hasattr(obj, "mode") and hasattr(obj, "size")):
        return False
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _array_to_rgb(a):
    if a.dtype == np.bool_ or a.dtype.kind not in "uif":
        raise TypeError(f"expected pixel values (uint8, or floats in [0, 1]), got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]                                                    # (H, W, 1)
    if a.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W, 3), (H, W, 4) or (H, W), got shape "
                         f"{a.shape}")
    H, W, C = a.shape
    if C not in (1, 3, 4):
        hint = (" (channels first? use x.transpose(1, 2, 0))" if H in (1, 3, 4) else "")
        raise ValueError(f"expected 1, 3 or 4 channels last, got shape {a.shape}{hint}")
    if H == 0 or W == 0:
        raise ValueError(f"empty image of shape {a.shape}")
    if C == 1:
        a = np.repeat(a, 3, axis=2)                                          # grey -> (H, W, 3)
    elif C == 4:
        a = a[:, :, :3]                                                      # drop alpha
    if a.dtype.kind == "f":
        return _check_float(a)
    if a.dtype != np.uint8:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer pixels must be in 0..255, got values in {lo}..{hi} "
                             f"(dtype {a.dtype}); rescale them to 0..255 or to floats in [0, 1]")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def _check_float(a):
    if not np.isfinite(a).all():
        raise ValueError("image holds NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        hint = (" (0..255 values? pass x.astype(np.uint8), or x / 255)" if hi <= 255.0 and lo >= 0
                else " (already normalised? pass raw pixels; predict normalises them itself)")
        raise ValueError(f"float images must hold values in [0, 1], got {lo:.4g}..{hi:.4g}{hint}")
    return np.ascontiguousarray(a, dtype=np.float32)


def list_image_files(folder):
    """The image files under ``folder``, recursively, sorted by path (by suffix, case-insensitive)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
