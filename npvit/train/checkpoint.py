"""The training checkpoint: everything ``--resume`` needs to continue bit for bit, in one ``.npz``.

    model/<name>              parameters, in the model's dtype
    opt/<name>/<slot>         optimizer state (momentum_buffer | exp_avg, exp_avg_sq)
    master/<name>             the loss scaler's high-precision master weights (when used)
    __train__                 uint8 array: UTF-8 JSON {"format": "npvit-train", "version": 1,
                              "model": {config, dtype, preprocess}, "optimizer": {type, lr, steps,
                              hyper, groups}, "schedule": {...}, "scaler": {scale, growth_tracker},
                              "train": TrainConfig, "epoch": epochs done, "step": optimizer steps
                              done, "history": [metrics per epoch], "rng": {"seed", "scheme"}}

RNG state: every random draw of a run comes from a generator seeded by (seed, purpose, epoch or
step) (see trainer.py), so the seed and the step counter *are* the RNG state; nothing else needs
saving.  No pickle: JSON in a uint8 array, read with ``allow_pickle=False``.  Written to a
temporary file and renamed, so a crash leaves the previous checkpoint intact.
"""
import json

import numpy as np

from ..formats.atomic import atomic_write

FORMAT, VERSION, META = "npvit-train", 1, "__train__"


def save_checkpoint(path, model, optimizer, meta, scaler=None):
    host = model.backend.to_numpy
    arrays = {f"model/{n}": np.ascontiguousarray(host(p)) for n, p in model.params.items()}
    opt = optimizer.state_dict()
    for name, slots in opt.pop("state").items():
        for slot, value in slots.items():
            arrays[f"opt/{name}/{slot}"] = value
    meta = dict(meta, format=FORMAT, version=VERSION, optimizer=opt)
    meta["model"] = {"config": model.config.to_dict(), "dtype": model.dtype,
                     "preprocess": model.preprocess.to_dict() if model.preprocess is not None else None}
    if scaler is not None:
        sd = scaler.state_dict()
        for name, value in sd.pop("master").items():
            arrays[f"master/{name}"] = value
        meta["scaler"] = sd
    arrays[META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # no allow_pickle=: NumPy 1.x stores it as an array
    return path


def read_checkpoint(path):
    """(meta dict, model params, optimizer state dict, scaler state or None) from ``path``."""
    from ..formats.containers import read_npz   # the checked reader: a damaged file is a ValueError
    from ..formats.fields import parse_json

    try:
        arrays = read_npz(path)
        if META not in arrays:
            raise ValueError(f"{path} is not an npvit training checkpoint (no {META} entry): to start "
                             "from model weights use --finetune instead of --resume")
        meta = parse_json(arrays.pop(META).tobytes(), f"{path}: its {META} entry")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable training checkpoint ({exc}); "
                         "delete it to start afresh") from None
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: unsupported training checkpoint (format {meta.get('format')!r}, "
                         f"version {meta.get('version')})")
    params, opt_state, master = {}, {}, {}
    for key, value in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "model":
            params[rest] = value
        elif kind == "opt":
            name, _, slot = rest.rpartition("/")
            opt_state.setdefault(name, {})[slot] = value
        elif kind == "master":
            master[rest] = value
    optimizer = dict(meta["optimizer"], state=opt_state)
    scaler = dict(meta["scaler"], master=master) if "scaler" in meta else None
    return meta, params, optimizer, scaler
