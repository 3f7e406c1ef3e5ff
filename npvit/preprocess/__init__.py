"""Turning pictures into the normalised (B, C, H, W) arrays a checkpoint expects.

``config`` holds the recipes (``PreprocessConfig``, ``PRESETS``), ``images`` reads what users
call an image, ``resize`` is Pillow's resampling in NumPy, ``transform`` chains them.
"""
from .config import PRESETS, PreprocessConfig, preset
from .images import to_rgb, to_rgb_list
from .transform import preprocess

# (the resize function stays in npvit.preprocess.resize: exporting it here would hide the module)
__all__ = ["PreprocessConfig", "PRESETS", "preset", "preprocess", "to_rgb", "to_rgb_list"]
