"""npvit's own ``.npz``: the parameters plus a JSON description, readable with NumPy alone.

    <timm parameter name>   one array per parameter, in the model's dtype (float32 or float64)
    __npvit__               uint8 array: UTF-8 JSON {"format": "npvit", "version": 1,
                            "dtype": ..., "config": ViTConfig.to_dict(), "preprocess": {...} | null}

No pickle anywhere (the JSON is bytes in a uint8 array, read with ``allow_pickle=False``).  Saving
writes a temporary file beside the target and renames it, so a crash never leaves half a file.
Arrays are stored as they are, so loading gives back the same bits.
"""
import json

import numpy as np

from ..model.config import ViTConfig
from ..model.schema import parameter_shapes
from ..preprocess.config import PreprocessConfig
from .atomic import atomic_write
from .checkpoint import Checkpoint
from .errors import CheckpointError

META_KEY = "__npvit__"
VERSION = 1


def is_native(arrays):
    return META_KEY in arrays


def save(model, path):
    """Write ``model`` (weights, config, preprocessing) to ``path`` atomically; returns ``path``."""
    host = model.backend.to_numpy
    arrays = {name: np.ascontiguousarray(host(model.params[name]))
              for name in parameter_shapes(model.config)}
    pre = getattr(model, "preprocess", None)
    meta = {"format": "npvit", "version": VERSION, "dtype": model.dtype,
            "config": model.config.to_dict(),
            "preprocess": pre.to_dict() if pre is not None else None}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays))
    return path


def read_native(arrays, source):
    raw = arrays.pop(META_KEY)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"{META_KEY} is {raw.dtype} {raw.shape}, expected a 1-D uint8 array")
        meta = json.loads(raw.tobytes().decode("utf-8"))
        if meta.get("format") != "npvit":
            raise ValueError(f"format is {meta.get('format')!r}")
        if int(meta.get("version", 0)) > VERSION:
            raise CheckpointError(f"{source}: written by a newer npvit (file format version "
                                  f"{meta['version']}, this npvit reads up to {VERSION}): upgrade npvit")
        config = ViTConfig.from_dict(meta["config"])
        pre = meta.get("preprocess")
        preprocess = PreprocessConfig.from_dict(pre) if pre else None
        dtype = str(meta.get("dtype", "float32"))
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{source}: the npvit description ({META_KEY}) is damaged: {exc}") from None
    expected = parameter_shapes(config)
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: arrays {extra[:5]} are not parameters of the stored config")
    ckpt = Checkpoint(state=arrays, origin="npvit", preprocess=preprocess, resample="bicubic")
    fixed = ("num_heads", "qk_scale")
    ckpt.known.update({k: getattr(config, k) for k in fixed})
    ckpt.defaults.update({k: v for k, v in config.to_dict().items()
                          if k not in fixed and k not in ("img_size", "patch_size")})
    if config.label_names is not None:
        ckpt.defaults["label_names"] = config.label_names
    ckpt.img_size = tuple(config.img_size)
    ckpt.dtype = dtype
    return ckpt
