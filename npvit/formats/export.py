"""Write a model as a timm-layout state dict, for PyTorch tools (``npvit convert --to timm``).

    .safetensors   our NumPy writer; float32; metadata {"format": "pt", "npvit.config": JSON,
                   "npvit.preprocess": JSON} so npvit reads the heads/GELU/eps back
    .pth/.pt/.bin  torch.save of torch tensors (needs torch), written atomically

The names are timm's ``VisionTransformer`` / ``SwinTransformer`` names.  timm has no ``pre_logits`` layer any more (the
seed's vit_model.py does), and timm's model uses exact GELU and eps 1e-6: ``notes`` says when the
checkpoint differs, so a timm model can be built to match (e.g. ``act_layer=GELUTanh``).
"""
import json
import os

import numpy as np

from ..model.config import SwinConfig
from ..model.schema import parameter_shapes
from .atomic import atomic_write
from .safetensors import write_safetensors

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def timm_state(model):
    """The parameters as ``{timm name: float32 host array}``."""
    host = model.backend.to_numpy
    return {name: np.asarray(host(model.params[name]), dtype=np.float32)
            for name in parameter_shapes(model.config)}


def timm_notes(model):
    cfg, notes = model.config, []
    if isinstance(cfg, SwinConfig):
        if cfg.window_rule != "timm":
            notes.append("lays out windows as Hugging Face / the original code do (window_rule='hf'): "
                         "timm computes the same only where every stage's grid is a multiple of the window")
        if cfg.ape:
            notes.append("has an absolute position embedding, which timm's SwinTransformer lacks")
        if cfg.gelu != "exact":
            notes.append("uses tanh-GELU: build the timm model with act_layer=timm.layers.GELUTanh")
        if cfg.norm_eps != 1e-5:
            notes.append(f"uses LayerNorm eps={cfg.norm_eps:g}: timm's Swin uses 1e-5")
        return notes
    if cfg.representation_size:
        notes.append("has a representation layer (pre_logits.fc + tanh): timm's VisionTransformer "
                     "no longer has one (the seed's vit_model.py does)")
    if cfg.gelu != "exact":
        notes.append("uses tanh-GELU: build the timm model with act_layer=timm.layers.GELUTanh")
    if cfg.norm_eps != 1e-6:
        notes.append(f"uses LayerNorm eps={cfg.norm_eps:g}: timm's default is 1e-6")
    if cfg.classifier == "gap":
        notes.append("average-pools (no class token): build timm with class_token=False, "
                     "global_pool='avg', fc_norm=False")
    return notes


def save_timm(model, path):
    """Write ``model``'s weights as a timm state dict at ``path`` (by suffix); returns notes."""
    path = os.fspath(path)
    state = timm_state(model)
    if path.endswith(".safetensors"):
        meta = {"format": "pt", "npvit.config": json.dumps(model.config.to_dict())}
        if getattr(model, "preprocess", None) is not None:
            meta["npvit.preprocess"] = json.dumps(model.preprocess.to_dict())
        write_safetensors(path, state, meta)
    elif path.endswith(TORCH_SUFFIXES):
        try:
            import torch
        except ImportError:
            raise RuntimeError(f"writing {path} needs torch (pip install torch); without it, "
                               "write a .safetensors file, which timm reads too") from None
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
        atomic_write(path, lambda f: torch.save(tensors, f))
    else:
        raise ValueError(f"{path}: a timm state dict is written as .safetensors or .pth/.pt/.bin")
    return timm_notes(model)
