"""Open a file as a flat ``{name: np.ndarray}``, whatever container holds it, never running code.

Containers are told apart by their first bytes, not by the file name:

    PK\\x03\\x04 + members "*.npy"        NumPy .npz   (ziparchive.py: headers checked, then read)
    PK\\x03\\x04 + member ".../data.pkl"  PyTorch zip  (torch.load(weights_only=True), only if torch is installed)
    \\x80 (pickle protocol 2+)           legacy PyTorch pickle (same rule)
    u64 length + "{"                     safetensors  (our own NumPy reader)

A pickle is never opened by anything but torch's weights-only unpickler, which refuses code and
arbitrary classes; without torch such a file is refused unread.
"""
import os

import numpy as np

from .errors import CheckpointError
from .safetensors import looks_like_safetensors, read_safetensors
from .ziparchive import npy_spec, open_zip, read_member

_FLOAT_KINDS = "fiu"
_TORCH_WRAPPERS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net",
                   "params")


def sniff(path):
    """Name the container of ``path``: 'npz', 'torch_zip', 'torch_pickle', 'safetensors'."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch_pickle"
    if looks_like_safetensors(head, size):
        return "safetensors"
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: a single NumPy array (.npy), not a checkpoint; expected an "
                              ".npz archive of named arrays, .safetensors, or a PyTorch state dict")
    shown = head[:8].hex(" ") if head else "an empty file"
    raise CheckpointError(
        f"{path}: not a checkpoint npvit can read (first bytes: {shown}, {size:,} bytes); expected "
        "a NumPy .npz, a .safetensors file, a PyTorch .pth/.pt/.bin state dict, or a Hugging Face / "
        "timm folder with config.json")


def _sniff_zip(path):
    with open_zip(path) as z:
        names = z.namelist()
    if any(n.endswith("data.pkl") for n in names):
        return "torch_zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    raise CheckpointError(f"{path}: a zip archive with members {names[:5]}..., which is neither a "
                          "NumPy .npz (all members *.npy) nor a PyTorch checkpoint (…/data.pkl)")


def read_npz(path):
    """All arrays of an .npz, checked to be plain numbers (object arrays would need pickle).

    Every member's header is read and checked first (``ziparchive``); an npvit file's arrays must
    also have the shapes its own config gives them.  Only then is any array data decompressed.
    """
    with open_zip(path) as z:
        infos = z.infolist()
        specs = {info.filename[:-4]: (info, npy_spec(path, z, info)) for info in infos}
        from .native import META_KEY, check_specs  # native imports this module's siblings only

        if META_KEY in specs:
            info, spec = specs[META_KEY]
            check_specs(path, read_member(path, z, info, spec),
                        {name: s[:2] for name, (_, s) in specs.items() if name != META_KEY})
        arrays = {}
        for name, (info, spec) in specs.items():
            arrays[name] = _check_array(path, name, read_member(path, z, info, spec))
    return arrays


def _check_array(path, name, arr):
    if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 and arr.dtype.names is None and not arr.dtype.shape:
        # bfloat16 written by JAX/ml_dtypes shows up as a 2-byte void: it is a float32's top half.
        return (arr.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind not in _FLOAT_KINDS:
        raise CheckpointError(f"{path}: array {name!r} has dtype {arr.dtype}; expected numbers "
                              "(float16/32/64 weights)")
    return arr


def read_torch(path):
    """A PyTorch state dict as NumPy arrays, via ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: a PyTorch pickle checkpoint; reading it safely needs torch's weights-only "
            "loader and torch is not installed. Install torch (pip install torch), or convert the "
            "file to .safetensors where torch is available. npvit never unpickles files itself.") \
            from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... ; all mean "refused"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: torch refused to load this file safely "
                              f"({type(exc).__name__}: {first}). It is truncated, not a state "
                              "dict, or holds code/objects, which npvit will not run.") from None
    sd = _unwrap(path, obj)
    arrays = {}
    for name, value in sd.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: key {name!r} ({type(name).__name__}) is not a string "
                                  "(a state dict maps parameter names to tensors)")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, expected a "
                                  "tensor (a state dict maps parameter names to tensors)")
        arrays[name] = _tensor_to_numpy(path, name, value, torch)
    return arrays


def _tensor_to_numpy(path, name, t, torch):
    if t.layout != torch.strided:
        raise CheckpointError(f"{path}: tensor {name!r} is {str(t.layout).replace('torch.', '')} "
                              "(a sparse tensor); checkpoint weights are dense")
    if t.is_meta:
        raise CheckpointError(f"{path}: tensor {name!r} is a meta tensor (a shape without data): "
                              "the file holds no weights for it")
    if t.is_quantized or t.is_complex():
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {t.dtype}; expected float weights")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()  # NumPy has no bfloat16; float32 holds every bf16 value exactly
    if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.uint8)):
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {t.dtype}; expected numbers")
    try:
        return t.resolve_conj().resolve_neg().numpy()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: tensor {name!r} cannot be read as an array ({exc})") from None


def _unwrap(path, obj):
    """A training checkpoint ({'model': sd, 'epoch': ..}) -> the state dict inside it."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _TORCH_WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None or any(hasattr(v, "shape") for v in obj.values() if v is not inner):
            break
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a state dict "
                              "(a dict of tensors, possibly under 'model' or 'state_dict')")
    return obj


def read_file(path):
    """``(arrays, container, metadata)`` of one weights file."""
    kind = sniff(path)
    if kind == "npz":
        return read_npz(path), kind, {}
    if kind == "safetensors":
        arrays, metadata = read_safetensors(path)
        return arrays, kind, metadata
    return read_torch(path), kind, {}
