"""A model folder: Hugging Face (``save_pretrained``) or timm hub (``save_for_hf``).

    config.json with "architecture"          timm hub   -> timm layout + pretrained_cfg
    config.json with model_type "vit"        Hugging Face ViT -> hf layout (+ preprocessor_config.json)
    weights: model.safetensors | model.safetensors.index.json (shards) | pytorch_model.bin | *.pth
"""
import json
import os

from .containers import read_file
from .errors import CheckpointError
from .hf import read_hf
from .timm_layout import read_timm

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
                "model.npz")
INDEX_FILE = "model.safetensors.index.json"


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(obj).__name__}")
    return obj


def read_weights(folder):
    """``(arrays, metadata, file)`` of the folder's weights (shards merged)."""
    index = os.path.join(folder, INDEX_FILE)
    if os.path.exists(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        arrays = {}
        for shard in sorted(set(weight_map.values())):
            if os.path.basename(str(shard)) != shard:
                raise CheckpointError(f"{index}: shard name {shard!r} must be a file in the folder")
            part, _, _ = read_file(os.path.join(folder, shard))
            arrays.update(part)
        return arrays, {}, index
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            arrays, _, metadata = read_file(path)
            return arrays, metadata, path
    raise CheckpointError(f"{folder}: a folder without weights; expected one of "
                          f"{', '.join(WEIGHT_FILES)} (found: {sorted(os.listdir(folder))[:10]})")


def kind_of_config(config):
    """'timm', 'hf' or None for a parsed config.json."""
    if config is None:
        return None
    if "architecture" in config and ("pretrained_cfg" in config or "model_args" in config):
        return "timm"
    if config.get("model_type") == "vit" or any(
            str(a).startswith("ViT") for a in config.get("architectures") or ()):
        return "hf"
    if "model_type" in config:
        raise CheckpointError(f"config.json says model_type={config['model_type']!r}; npvit reads "
                              "Hugging Face ViT (model_type 'vit') and timm ViT folders")
    return None


def read_folder(folder, from_arrays):
    config_path = os.path.join(folder, "config.json")
    config = read_json(config_path) if os.path.exists(config_path) else None
    kind = kind_of_config(config)
    arrays, metadata, wfile = read_weights(folder)
    if kind == "timm":
        return read_timm(arrays, wfile, metadata, hub_config=config)
    if kind == "hf":
        return read_hf(arrays, wfile, config, processor_json(folder))
    return from_arrays(arrays, wfile, metadata)


def processor_json(folder):
    path = os.path.join(folder, "preprocessor_config.json")
    return read_json(path) if os.path.exists(path) else None
