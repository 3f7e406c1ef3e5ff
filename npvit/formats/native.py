"""npvit's own ``.npz``: the parameters plus a JSON description, readable with NumPy alone.

    <timm parameter name>   one array per parameter, in the model's dtype (float32 or float64)
    __npvit__               uint8 array: UTF-8 JSON {"format": "npvit", "version": 1,
                            "dtype": ..., "arch": "vit" | "swin", "config": the config's to_dict(),
                            "preprocess": {...} | null}         (no "arch": a ViT, as files before Swin)

No pickle anywhere (the JSON is bytes in a uint8 array, read with ``allow_pickle=False``).  Saving
writes a temporary file beside the target and renames it, so a crash never leaves half a file.
Arrays are stored as they are, so loading gives back the same bits.
"""
import json
import os
from typing import TYPE_CHECKING, Union

import numpy as np

from ..model.config import SwinConfig
from ..model.schema import parameter_shapes
from .atomic import atomic_write
from .checkpoint import Checkpoint
from .errors import CheckpointError
from .fields import Fields, parse_json, preprocess_config, swin_config, vit_config

if TYPE_CHECKING:
    from ..model.base import Model

META_KEY = "__npvit__"
VERSION = 1


def is_native(arrays):
    return META_KEY in arrays


def save(model: "Model", path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
    """Write ``model`` (weights, config, preprocessing) to ``path`` atomically; returns ``path``.

    ``path`` must be a new name, a regular file (replaced) or a link to one; a directory, device,
    FIFO or socket is refused with ``NotARegularFileError`` and left untouched (``atomic.py``).
    """
    host = model.backend.to_numpy
    arrays = {name: np.ascontiguousarray(host(model.params[name]))
              for name in parameter_shapes(model.config)}
    pre = getattr(model, "preprocess", None)
    meta = {"format": "npvit", "version": VERSION, "dtype": model.dtype,
            "arch": "swin" if isinstance(model.config, SwinConfig) else "vit", "config": model.config.to_dict(),
            "preprocess": pre.to_dict() if pre is not None else None}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # no allow_pickle=: NumPy 1.x stores it as an array
    return path


def _description(raw, source):
    """``(config, preprocess or None, dtype)`` from the ``__npvit__`` array, every field checked."""
    def damaged(exc):
        return CheckpointError(f"{source}: the npvit description ({META_KEY}) is damaged: {exc}")

    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"it is {raw.dtype} {raw.shape}, expected a 1-D uint8 array")
        meta = Fields(parse_json(raw.tobytes(), "its JSON"), "its JSON")
        if meta.str("format") != "npvit":
            raise CheckpointError(f"format is {meta.d.get('format')!r}, expected 'npvit'")
        version = meta.int("version", default=0, minimum=0)
    except CheckpointError as exc:
        raise damaged(exc) from None
    if version > VERSION:  # before the config: a newer file may hold settings this npvit lacks
        raise CheckpointError(f"{source}: written by a newer npvit (file format version "
                              f"{version}, this npvit reads up to {VERSION}): upgrade npvit")
    try:
        if "config" not in meta:
            raise CheckpointError("it has no config")
        arch = meta.str("arch", default="vit", choices=("vit", "swin"))
        config = (swin_config if arch == "swin" else vit_config)(meta.d["config"], "config")
        pre = meta.d.get("preprocess")
        preprocess = preprocess_config(pre, "preprocess") if pre is not None else None
        dtype = meta.str("dtype", default="float32", choices=("float32", "float64"))
    except CheckpointError as exc:
        raise damaged(exc) from None
    return config, preprocess, dtype


def check_specs(source, raw, specs):
    """Before any weights are read: do the arrays' declared ``{name: (shape, dtype)}`` match the
    parameters of the config the file describes?"""
    config, _, _ = _description(raw, source)
    expected = parameter_shapes(config)
    extra = sorted(set(specs) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: arrays {extra[:5]} are not parameters of the stored config")
    missing = sorted(set(expected) - set(specs))
    if missing:
        raise CheckpointError(f"{source}: parameters {missing[:5]} of the stored config are missing")
    for name, (shape, _) in specs.items():
        if tuple(shape) != tuple(expected[name]):
            raise CheckpointError(f"{source}: array {name!r} is declared {tuple(shape)} but the stored "
                                  f"config makes it {tuple(expected[name])}")


def read_native(arrays, source):
    config, preprocess, dtype = _description(arrays.pop(META_KEY), source)
    expected = parameter_shapes(config)
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: arrays {extra[:5]} are not parameters of the stored config")
    ckpt = Checkpoint(state=arrays, origin="npvit", preprocess=preprocess, resample="bicubic")
    ckpt.dtype = dtype
    if isinstance(config, SwinConfig):
        from .swin import apply_config

        ckpt.arch = "swin"
        apply_config(ckpt, config)
        return ckpt
    fixed = ("num_heads", "qk_scale")
    ckpt.known.update({k: getattr(config, k) for k in fixed})
    ckpt.defaults.update({k: v for k, v in config.to_dict().items()
                          if k not in fixed and k not in ("img_size", "patch_size")})
    if config.label_names is not None:
        ckpt.defaults["label_names"] = config.label_names
    ckpt.img_size = tuple(config.img_size)
    return ckpt
