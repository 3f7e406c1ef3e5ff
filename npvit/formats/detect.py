"""Which format a path holds, decided from its content; returns the reader's Checkpoint.

Containers by first bytes (``containers.sniff``), then layouts by the names inside:

    __npvit__ member                               npvit's own .npz
    [prefix]embedding/kernel                       Google official / big_vision .npz
    conv_proj.weight / class_token                 torchvision
    vit.embeddings.* / embeddings.patch_embeddings HF transformers ViT
    *patch_embed.proj.weight                       timm / the seed / DeiT
    *relative_position_bias_table                  a Swin Transformer (timm, original, HF): swin.py
"""
import os

from .containers import read_file
from .errors import CheckpointError
from .fields import read_json
from .folder import kind_of_config, processor_json, read_folder
from .hf import is_hf, read_hf
from .native import is_native, read_native
from .official import find_prefix, read_flax
from .swin import is_swin, read_swin
from .timm_layout import is_timm, read_timm
from .torchvision_layout import is_torchvision, read_torchvision


def read_checkpoint(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_folder(path, from_arrays)
    arrays, _, metadata = read_file(path)
    return from_arrays(arrays, path, metadata)


def from_arrays(arrays, source, metadata=None):
    if not arrays:
        raise CheckpointError(f"{source}: holds no arrays; expected a ViT checkpoint")
    if is_native(arrays):
        return read_native(arrays, source)
    if find_prefix(arrays) is not None:
        return read_flax(arrays, source)
    if is_torchvision(arrays):
        return read_torchvision(arrays, source)
    sibling = _sibling_config(source)
    if is_swin(arrays):
        kind = kind_of_config(sibling)
        return read_swin(arrays, source, metadata, hf_config=sibling if kind == "hf" else None,
                         processor=processor_json(os.path.dirname(source)) if kind == "hf" else None,
                         hub_config=sibling if kind == "timm" else None)
    if is_hf(arrays):
        config = sibling if kind_of_config(sibling) == "hf" else None
        proc = processor_json(os.path.dirname(source)) if config else None
        return read_hf(arrays, source, config, proc)
    if is_timm(arrays):
        hub = sibling if kind_of_config(sibling) == "timm" else None
        return read_timm(arrays, source, metadata, hub_config=hub)
    keys = sorted(arrays)
    raise CheckpointError(
        f"{source}: {len(keys)} arrays ({', '.join(keys[:4])}, ...) in no ViT layout npvit knows; "
        "expected Google's (embedding/kernel, Transformer/...), timm's (patch_embed.proj.weight, "
        "blocks.0...), Hugging Face's (vit.embeddings...) or torchvision's (conv_proj, encoder.layers...)")


def _sibling_config(source):
    """config.json next to a weights file (a file taken out of a HF/timm folder), if readable."""
    path = os.path.join(os.path.dirname(os.path.abspath(source)), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        cfg = read_json(path)
        kind_of_config(cfg)
        return cfg
    except CheckpointError:
        return None
