"""Read and write ``.safetensors`` files with NumPy alone.

Layout (https://github.com/huggingface/safetensors):

    [8 bytes: N, little-endian u64] [N bytes: UTF-8 JSON header] [data section]
    header = {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..],
              "data_offsets": [begin, end]}, ...}       offsets relative to the data section

Reading trusts nothing in the header: its length is capped, every entry's dtype, shape and
offsets are checked against each other and against the file size *before* any array is made,
and the tensors must tile the data section exactly (a truncated file is caught here).  Arrays are
views into one buffer read from disk (no per-tensor copy), except BF16, which NumPy lacks and
which becomes float32 (bf16 is the top half of a float32: ``uint16 << 16``).
"""
import json
import math
import os
import struct

import numpy as np

from .atomic import atomic_write
from .errors import CheckpointError
from .fields import parse_json

MAX_HEADER_BYTES = 16 << 20    # a ViT-H header is ~60 KB (the reference allows 100 MB, for LLMs)
MAX_ENTRIES = 400_000          # JSON object entries (a tensor spends 4): parsing stays bounded
MAX_NDIM = 8
MAX_DIM = 2**31                # no dimension of a ViT weight comes near; zero-size tensors too

# safetensors dtype name -> NumPy dtype (always little-endian on disk)
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "BF16": np.dtype("<u2"),
}
_NAMES = {np.dtype(v).newbyteorder("<") if v.itemsize > 1 else v: k
          for k, v in DTYPES.items() if k != "BF16"}


def looks_like_safetensors(head, file_size):
    """True if the first bytes have the shape of a safetensors header (a cheap sniff)."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER_BYTES, file_size - 8)


def read_header(path):
    """Parse and validate the header: ``(entries {name: (dtype, shape, begin, end)}, metadata, data_start)``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file "
                                  "(it starts with an 8-byte header length): the file is truncated")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: safetensors header claims {n:,} bytes (limit "
                                  f"{MAX_HEADER_BYTES:,}): not a valid file")
        if 8 + n > size:
            raise CheckpointError(f"{path}: safetensors header claims {n:,} bytes but the file has "
                                  f"only {size - 8:,} after the length: the file is truncated")
        text = f.read(n)
    header = parse_json(text, f"{path}: the safetensors header", max_entries=MAX_ENTRIES)
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_len = size - 8 - n
    entries = {name: _check_entry(path, name, spec, data_len) for name, spec in header.items()}
    _check_tiling(path, entries, data_len)
    return entries, metadata, 8 + n


def _check_entry(path, name, spec, data_len):
    def bad(msg):
        raise CheckpointError(f"{path}: tensor {name!r}: {msg}")

    if not isinstance(spec, dict):
        bad(f"header entry is a {type(spec).__name__}, expected an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        bad(f"dtype {dtype!r} is not supported (supported: {', '.join(DTYPES)})")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):
        bad(f"shape {shape!r} is not a list of at most {MAX_NDIM} integers in 0..{MAX_DIM:,}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        bad(f"data_offsets {offsets!r} is not a [begin, end] pair with 0 <= begin <= end")
    # Python ints: a hostile shape like [2**40, 2**40] cannot overflow, and is caught right here.
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        bad(f"shape {shape} of {dtype} needs {nbytes:,} bytes but data_offsets {offsets} "
            f"span {offsets[1] - offsets[0]:,}: the header is inconsistent")
    if offsets[1] > data_len:
        bad(f"data ends at byte {offsets[1]:,} but the data section has {data_len:,}: "
            "the file is truncated")
    if nbytes == 0 and math.prod(d for d in shape if d) * DTYPES[dtype].itemsize > max(data_len, 1 << 20):
        bad(f"shape {shape} is empty but its other dimensions are absurd for this file")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _check_tiling(path, entries, data_len):
    """Tensors must cover the data section exactly, without overlap (as the reference checks)."""
    pos = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != pos:
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {begin:,}, expected "
                                  f"{pos:,} (tensors overlap or leave gaps): not a valid file")
        pos = end
    if pos != data_len:
        raise CheckpointError(f"{path}: the tensors cover {pos:,} bytes of a {data_len:,}-byte data "
                              "section: the file is truncated or has trailing data")


def read_safetensors(path):
    """``({name: np.ndarray}, metadata)``; BF16 tensors come back as float32."""
    entries, metadata, start = read_header(path)
    data_len = os.path.getsize(path) - start
    with open(path, "rb") as f:
        f.seek(start)
        buf = np.fromfile(f, dtype=np.uint8, count=data_len)
    if buf.size != data_len:
        raise CheckpointError(f"{path}: could read only {buf.size:,} of {data_len:,} data bytes")
    arrays = {}
    for name, (dtype, shape, begin, end) in entries.items():
        arr = buf[begin:end].view(DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = arr
    return arrays, metadata


def write_safetensors(path, arrays, metadata=None):
    """Write ``{name: array}`` atomically; arrays are stored C-contiguous and little-endian."""
    header, blobs, pos = {}, [], 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        le = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if le not in _NAMES:
            raise TypeError(f"cannot store {name!r} of dtype {arr.dtype} in safetensors "
                            f"(supported: {sorted(str(d) for d in _NAMES)})")
        # A copy only where needed: transposed views would otherwise be written in the wrong order.
        blob = np.ascontiguousarray(arr, dtype=le)
        header[name] = {"dtype": _NAMES[le], "shape": list(arr.shape),
                        "data_offsets": [pos, pos + blob.nbytes]}
        blobs.append(blob)
        pos += blob.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # pad so the data section starts 8-byte aligned

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(memoryview(blob.reshape(-1)).cast("B"))

    atomic_write(path, write)
