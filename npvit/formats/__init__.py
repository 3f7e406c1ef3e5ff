"""Checkpoint formats: reading every common ViT checkpoint, and npvit's own file format.

    load.py        npvit.load: detect, convert, build the model (overrides, resampling, head)
    detect.py      which format a path holds (by content)   containers.py  npz / torch / safetensors
    official.py    Google official + big_vision .npz        timm_layout.py  timm / seed / DeiT
    hf.py          Hugging Face ViT                         torchvision_layout.py  torchvision
    native.py      npvit's own .npz (save + read)           safetensors.py  NumPy reader/writer
    resample.py    position-embedding resampling            infer.py        config from shapes
    export.py      timm-layout state dicts for other tools
"""
from .errors import CheckpointError
from .load import EMBEDDED, CheckpointWarning, load
from .native import save
from .resample import resample_pos_embed

__all__ = ["load", "save", "CheckpointError", "CheckpointWarning", "EMBEDDED", "resample_pos_embed"]
