"""Zip archives (NumPy ``.npz``, PyTorch's zip checkpoints) opened without trusting their records,
and ``.npz`` members read with every size checked before anything is decompressed.

    open_zip(path)       the end record's entry count first (at most MAX_MEMBERS), then
                         ``zipfile`` reads the directory; each member must be stored or deflated,
                         unencrypted, uniquely and sanely named, and inside the file; a deflated
                         member may not claim more than MAX_RATIO times its compressed size once
                         past RATIO_FREE bytes (real weights compress ~1.1x; a zip bomb ~1000x)
    npy_spec(z, info)    a member's .npy header (magic, version, <= 10,000 bytes, a plain dict
                         parsed with ast.literal_eval): (shape, dtype, fortran order, header bytes);
                         its shape times its item size must equal the member's declared size
    read_member(...)     the data, read into a preallocated array; the CRC is checked at the end

So a member that claims a gigabyte is refused after reading its ~100-byte header: memory stays flat.
zipfile's and zlib's own errors (bad CRC, truncated stream, unsupported versions) become
``CheckpointError`` naming the file and member.
"""
import ast
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from .errors import CheckpointError

MAX_MEMBERS = 100_000        # a ViT-H with optimizer state has a few thousand
MAX_NPY_HEADER = 10_000      # NumPy's own limit for np.load
MAX_DIM = 2**31              # no dimension of a ViT weight comes near
MAX_RATIO, RATIO_FREE = 64, 16 << 20
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError,
               struct.error, UnicodeDecodeError, ValueError, KeyError, OverflowError)


def open_zip(path):
    """A ``zipfile.ZipFile`` whose members passed the checks above (close it after use)."""
    size = os.path.getsize(path)
    entries = _declared_entries(path, size)
    if entries > MAX_MEMBERS:
        raise CheckpointError(f"{path}: the zip archive declares {entries:,} members (limit "
                              f"{MAX_MEMBERS:,}): not a checkpoint")
    try:
        z = zipfile.ZipFile(path)
    except NotImplementedError as exc:
        raise CheckpointError(f"{path}: a zip archive using a feature no checkpoint writer uses "
                              f"({exc}): not a valid checkpoint") from None
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{path}: a zip archive (.npz or PyTorch file) that cannot be opened "
                              f"({_why(exc)}): it is truncated or corrupted; download it again") from None
    try:
        seen = set()
        for info in z.infolist():
            _check_member(path, info, size, seen)
    except BaseException:
        z.close()
        raise
    return z


def _declared_entries(path, size):
    """Members the end-of-central-directory record declares (zip64 too); 0 if none is found
    (zipfile then reports the archive as broken)."""
    with open(path, "rb") as f:
        f.seek(max(0, size - (65535 + 22)))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return 0
        entries = struct.unpack("<H", tail[at + 10:at + 12])[0]
        loc = at - 20
        if entries == 0xFFFF and loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
            (offset,) = struct.unpack("<Q", tail[loc + 8:loc + 16])
            if offset + 56 <= size:
                f.seek(offset)
                rec = f.read(56)
                if rec[:4] == b"PK\x06\x06":
                    entries = struct.unpack("<Q", rec[32:40])[0]
    return entries


def _check_member(path, info, size, seen):
    name = info.filename

    def bad(msg):
        raise CheckpointError(f"{path}: zip member {name!r}: {msg}: not a valid checkpoint")

    if not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in name.split("/"):
        bad("a name that no checkpoint writer produces")
    if name in seen:
        bad("appears twice in the archive (which copy counts is ambiguous)")
    seen.add(name)
    if info.flag_bits & 0x1:
        bad("encrypted")
    if info.flag_bits & 0x20:
        bad("compressed patched data (zip flag bit 5), which nothing writes for checkpoints")
    if info.compress_type not in _METHODS:
        bad(f"compression method {info.compress_type} (checkpoints are stored or deflated)")
    if info.header_offset + info.compress_size > size:
        bad(f"its data would end at byte {info.header_offset + info.compress_size:,} of a "
            f"{size:,}-byte file (truncated)")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        bad(f"stored (uncompressed) but declares {info.file_size:,} bytes in {info.compress_size:,}")
    if info.file_size > max(RATIO_FREE, MAX_RATIO * info.compress_size):
        bad(f"declares {info.file_size:,} bytes from {info.compress_size:,} compressed (more than "
            f"{MAX_RATIO}x: a decompression bomb, not weights)")


def _why(exc):
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def npy_spec(path, z, info):
    """``(shape, dtype, fortran_order, header_bytes)`` of an .npy member, from its header alone."""
    where = f"{path}: array {info.filename[:-4]!r}"
    try:
        with z.open(info) as f:
            magic = f.read(8)
            if len(magic) < 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
                raise CheckpointError(f"{where}: not a NumPy .npy member (starts {magic[:8]!r})")
            n_len = 2 if magic[6] == 1 else 4
            raw_len = f.read(n_len)
            if len(raw_len) < n_len:
                raise CheckpointError(f"{where}: the .npy header is truncated")
            (hlen,) = struct.unpack("<H" if n_len == 2 else "<I", raw_len)
            if hlen > MAX_NPY_HEADER:
                raise CheckpointError(f"{where}: .npy header of {hlen:,} bytes (limit "
                                      f"{MAX_NPY_HEADER:,})")
            text = f.read(hlen)
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{where}: cannot be read from the archive ({_why(exc)}): the file is "
                              "truncated or corrupted") from None
    if len(text) < hlen:
        raise CheckpointError(f"{where}: the .npy header is truncated")
    header_bytes = 8 + n_len + hlen
    try:
        d = ast.literal_eval(text.decode("latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise CheckpointError(f"{where}: the .npy header is not a Python literal: "
                              f"{text[:60]!r}") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise CheckpointError(f"{where}: the .npy header {text[:80]!r} is not NumPy's "
                              "{'descr', 'fortran_order', 'shape'}")
    descr, order, shape = d["descr"], d["fortran_order"], d["shape"]
    if not isinstance(descr, str):
        raise CheckpointError(f"{where}: dtype {descr!r} is a structured (record) dtype; "
                              "checkpoints hold plain numbers")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: unknown dtype {descr!r}") from None
    if dtype.hasobject:
        raise CheckpointError(f"{where}: holds Python objects (dtype=object), which would need "
                              "pickle to read; checkpoints hold numbers only")
    if not isinstance(order, bool):
        raise CheckpointError(f"{where}: fortran_order is {order!r}, expected True or False")
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
        raise CheckpointError(f"{where}: shape {shape!r} is not a tuple of non-negative integers")
    if any(s > MAX_DIM for s in shape):
        raise CheckpointError(f"{where}: shape {shape} has a dimension over {MAX_DIM:,}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0 and math.prod(s for s in shape if s) * dtype.itemsize > max(info.file_size, 1 << 20):
        raise CheckpointError(f"{where}: shape {shape} is empty but its other dimensions are absurd "
                              "for this file")
    if nbytes != info.file_size - header_bytes:
        raise CheckpointError(f"{where}: its header declares shape {shape} of {dtype} "
                              f"({nbytes:,} bytes) but the archive member holds "
                              f"{info.file_size - header_bytes:,} bytes of data")
    return shape, dtype, order, header_bytes


def read_member(path, z, info, spec):
    """The array of an .npy member whose ``spec`` (from ``npy_spec``) passed the checks."""
    shape, dtype, order, header_bytes = spec
    where = f"{path}: array {info.filename[:-4]!r}"
    flat = np.empty(math.prod(shape), dtype)
    buf = memoryview(flat.view(np.uint8)) if flat.size else memoryview(bytearray())
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            got, extra = _read_stored(path, info, header_bytes, buf)
        else:
            with z.open(info) as f:
                f.read(header_bytes)
                got = _read_into(f, buf)
                extra = f.read(1)   # reaching the end makes zipfile check the CRC
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{where}: the archive is truncated or corrupted ({_why(exc)}); "
                              "download or write it again") from None
    if got != len(buf) or extra:
        raise CheckpointError(f"{where}: holds {'more' if extra else 'fewer'} bytes than its "
                              "header declares: the file is truncated or corrupted")
    return flat.reshape(shape, order="F" if order else "C")


def _read_into(f, buf):
    """Fill ``buf`` from the file object ``f`` as far as it goes; returns the bytes read."""
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _read_stored(path, info, header_bytes, buf):
    """An uncompressed member read straight into ``buf`` (zipfile would copy it twice), with the
    checks zipfile makes: the local header's signature and name, then the CRC of the whole member."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local file header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        name = f.read(name_len)
        if name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise zipfile.BadZipFile(f"the local header names {name[:60]!r}, the directory {info.orig_filename!r}")
        f.seek(extra_len, os.SEEK_CUR)
        crc = zlib.crc32(f.read(header_bytes))
        got = _read_into(f, buf)
        crc = zlib.crc32(buf[:got], crc)
        if got == len(buf) and crc != info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return got, b""
