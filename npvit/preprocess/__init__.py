"""Turning pictures into the normalised (B, C, H, W) arrays a checkpoint expects."""
from .config import PRESETS, PreprocessConfig

__all__ = ["PreprocessConfig", "PRESETS"]
