"""A model folder: Hugging Face (``save_pretrained``) or timm hub (``save_for_hf``).

    config.json with "architecture"          timm hub   -> timm layout + pretrained_cfg
    config.json with model_type "vit"        Hugging Face ViT -> hf layout (+ preprocessor_config.json)
    config.json with model_type "swin"       Hugging Face Swin -> swin.py (likewise)
    weights: model.safetensors | model.safetensors.index.json (shards) | pytorch_model.bin | *.pth
"""
import os

from .containers import read_file
from .errors import CheckpointError
from .fields import Fields, read_json
from .hf import read_hf
from .swin import is_swin, read_swin
from .timm_layout import read_timm

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
                "model.npz")
INDEX_FILE = "model.safetensors.index.json"


def read_weights(folder):
    """``(arrays, metadata, file)`` of the folder's weights (shards merged)."""
    index = os.path.join(folder, INDEX_FILE)
    if os.path.exists(index):
        return _read_shards(folder, index), {}, index
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            arrays, _, metadata = read_file(path)
            return arrays, metadata, path
    raise CheckpointError(f"{folder}: a folder without weights; expected one of "
                          f"{', '.join(WEIGHT_FILES)} (found: {sorted(os.listdir(folder))[:10]})")


def _read_shards(folder, index):
    """The shards an index names, each checked to hold exactly the tensors the index puts in it."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no 'weight_map' object naming the shard of each tensor")
    shards = {}
    for tensor, shard in weight_map.items():
        if (not isinstance(shard, str) or os.path.basename(shard) != shard or "\x00" in shard
                or shard in ("", ".", "..")):
            raise CheckpointError(f"{index}: shard name {shard!r} (for {tensor!r}) must be a file name "
                                  "in the folder")
        shards.setdefault(shard, set()).add(tensor)
    arrays = {}
    for shard, tensors in sorted(shards.items()):
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            raise CheckpointError(f"{index}: names shard {shard!r}, which is not in the folder")
        part, _, _ = read_file(path)
        if set(part) != tensors:
            odd = sorted(set(part) ^ tensors)
            raise CheckpointError(f"{path}: holds other tensors than {INDEX_FILE} says (differing: "
                                  f"{', '.join(odd[:4])}{', ...' if len(odd) > 4 else ''})")
        arrays.update(part)
    return arrays


def kind_of_config(config):
    """'timm', 'hf' or None for a parsed config.json."""
    if config is None:
        return None
    if "architecture" in config and ("pretrained_cfg" in config or "model_args" in config):
        return "timm"
    f = Fields(config, "config.json")
    archs = config.get("architectures")
    archs = archs if isinstance(archs, list) else []
    if f.str("model_type") in ("vit", "swin") or any(str(a).startswith(("ViT", "Swin")) for a in archs):
        return "hf"
    if "model_type" in config:
        raise CheckpointError(f"config.json says model_type={config['model_type']!r}; npvit reads "
                              "Hugging Face ViT and Swin (model_type 'vit', 'swin') and timm folders")
    return None


def read_folder(folder, from_arrays):
    config_path = os.path.join(folder, "config.json")
    config = read_json(config_path) if os.path.exists(config_path) else None
    kind = kind_of_config(config)
    arrays, metadata, wfile = read_weights(folder)
    if is_swin(arrays):
        return read_swin(arrays, wfile, metadata, hf_config=config if kind == "hf" else None,
                         processor=processor_json(folder) if kind == "hf" else None,
                         hub_config=config if kind == "timm" else None)
    if kind == "timm":
        return read_timm(arrays, wfile, metadata, hub_config=config)
    if kind == "hf":
        return read_hf(arrays, wfile, config, processor_json(folder))
    return from_arrays(arrays, wfile, metadata)


def processor_json(folder):
    path = os.path.join(folder, "preprocessor_config.json")
    return read_json(path) if os.path.exists(path) else None
