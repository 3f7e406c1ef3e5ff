"""What every format reader hands to the loader: timm-named arrays plus what the file says.

    Checkpoint.state      {timm state-dict name: np.ndarray}   (layouts already converted)
    Checkpoint.origin     'official', 'big_vision', 'timm', 'deit', 'hf', 'torchvision', 'npvit'
    Checkpoint.known      ViTConfig fields the file itself fixes (num_heads from a q kernel): an
                          override that disagrees is an error
    Checkpoint.defaults   the origin's conventions (gelu, norm_eps, heads by width, labels):
                          overrides win
    Checkpoint.img_size   the image size the file records, if any (else the loader assumes a
                          square grid from the position embedding)
    Checkpoint.arch       'vit' or 'swin': which model the arrays are for
    Checkpoint.preprocess PreprocessConfig the file records, else ``preprocess_default`` (an
                          origin's own recipe), else ``preprocess_preset`` names one
    Checkpoint.resample   how the origin resamples position embeddings
    Checkpoint.dtype      the dtype the file asks for (npvit files), else None (float32)
    Checkpoint.notes      things worth telling the user (dropped arrays, ...)
    Checkpoint.buffers    constant arrays the file carries beside its weights (Swin's original
                          relative_position_index / attn_mask), checked against the model, then dropped

``Arrays`` lets a reader take arrays by name with shape checks and then list what it did not use,
so an unknown part of a checkpoint is reported instead of silently ignored.
"""
from dataclasses import dataclass, field
from typing import Optional

import warnings

from .errors import CheckpointError


class CheckpointWarning(UserWarning):
    """Something in the file was dropped or replaced while loading."""


@dataclass
class Checkpoint:
    state: dict
    origin: str
    known: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    img_size: Optional[tuple] = None
    preprocess: object = None
    preprocess_default: object = None
    preprocess_preset: str = "timm"
    resample: str = "bicubic"
    dtype: Optional[str] = None
    notes: list = field(default_factory=list)
    arch: str = "vit"
    buffers: dict = field(default_factory=dict)


class Arrays:
    """A name -> array mapping that remembers which names were used."""

    def __init__(self, arrays, source, prefix=""):
        self.arrays, self.source, self.prefix, self.used = arrays, source, prefix, set()

    def has(self, key):
        return self.prefix + key in self.arrays

    def take(self, key, ndim=None, shape=None):
        full = self.prefix + key
        if full not in self.arrays:
            raise CheckpointError(f"{self.source}: array {full!r} is missing; the other arrays "
                                  "say it should be there (the file is incomplete or another layout)")
        arr = self.arrays[full]
        self.used.add(full)
        if ndim is not None and arr.ndim != ndim:
            raise CheckpointError(f"{self.source}: array {full!r} has shape {arr.shape}, expected "
                                  f"{ndim} dimensions")
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise CheckpointError(f"{self.source}: array {full!r} has shape {arr.shape}, expected "
                                  f"{tuple(shape)} (to fit the other arrays)")
        if arr.dtype.kind != "f":
            raise CheckpointError(f"{self.source}: array {full!r} has dtype {arr.dtype}, expected "
                                  "floating-point weights")
        return arr

    def unused(self):
        return sorted(k for k in self.arrays if k.startswith(self.prefix) and k not in self.used)

    def refuse_unused(self, what, allowed=()):
        """Unknown arrays mean a part npvit's ViT lacks: refuse rather than compute something else."""
        left = [k for k in self.unused() if not any(k.startswith(self.prefix + a) for a in allowed)]
        if left:
            shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
            raise CheckpointError(f"{self.source}: {what} with arrays npvit's ViT has no place for: "
                                  f"{shown}. This checkpoint has parts (or a variant) npvit does "
                                  "not implement; loading it without them would give wrong outputs.")


def count_blocks(arrays, pattern_prefix, suffix):
    """Number of blocks ``prefix{i}suffix`` with i = 0..n-1 (a gap is an error)."""
    found = set()
    for k in arrays:
        if k.startswith(pattern_prefix) and k.endswith(suffix):
            mid = k[len(pattern_prefix):len(k) - len(suffix)]
            if mid.isdigit():
                found.add(int(mid))
    n = len(found)
    if found and found != set(range(n)):
        missing = sorted(set(range(max(found) + 1)) - found)
        raise CheckpointError(f"blocks {missing} are missing between 0 and {max(found)} "
                              f"('{pattern_prefix}<i>{suffix}'): the file is incomplete")
    return n


def labels_for_head(labels, num_classes, source):
    """The file's label names, or None (with a warning) when they do not fit its head."""
    if labels is not None and len(labels) != num_classes:
        warnings.warn(f"{source}: {len(labels)} label names for a {num_classes}-class head; ignoring the names",
                      CheckpointWarning, stacklevel=4)
        return None
    return labels


def heads_by_width(width):
    """The standard ViT variants' heads for a width (Ti 192/3, S 384/6, B 768/12, L 1024/16, H 1280/16)."""
    return {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}.get(int(width))
