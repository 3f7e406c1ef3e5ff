"""Bad and hostile files: each is refused with an error saying what was found and what was
expected; no code in a file ever runs (payloads that would create a file prove it); a hostile
safetensors header causes no large allocation; no model is ever built from inconsistent weights."""
import json
import os
import pickle
import struct
import sys
import tracemalloc

import numpy as np
import pytest

import npvit
from npvit.formats import CheckpointError

DATA = os.path.join(os.path.dirname(__file__), "data")


class Payload:
    """Unpickling this calls open(marker, 'w'): the marker file appears if the pickle ever runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _timm_like(dim=16, depth=1, dtype=np.float32, classes=3):
    """A small, consistent timm-named state dict (random values)."""
    rng = np.random.default_rng(0)
    sd = {"cls_token": (1, 1, dim), "pos_embed": (1, 5, dim), "patch_embed.proj.weight": (dim, 3, 4, 4),
          "patch_embed.proj.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,),
          "head.weight": (classes, dim), "head.bias": (classes,)}
    for i in range(depth):
        for n, s in (("norm1", (dim,)), ("norm2", (dim,))):
            sd[f"blocks.{i}.{n}.weight"], sd[f"blocks.{i}.{n}.bias"] = s, s
        sd[f"blocks.{i}.attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
        sd[f"blocks.{i}.attn.proj.weight"], sd[f"blocks.{i}.attn.proj.bias"] = (dim, dim), (dim,)
        sd[f"blocks.{i}.mlp.fc1.weight"], sd[f"blocks.{i}.mlp.fc1.bias"] = (2 * dim, dim), (2 * dim,)
        sd[f"blocks.{i}.mlp.fc2.weight"], sd[f"blocks.{i}.mlp.fc2.bias"] = (dim, 2 * dim), (dim,)
    return {k: (rng.standard_normal(s) * 0.1).astype(dtype) for k, s in sd.items()}


def test_consistent_fixture_loads(tmp_path):
    """The fixture above is a valid checkpoint: every failure below is due to its one defect."""
    np.savez(tmp_path / "ok.npz", **_timm_like())
    m = npvit.load(tmp_path / "ok.npz", num_heads=2)
    assert m.config.img_size == (8, 8) and m(np.zeros((1, 3, 8, 8))).shape == (1, 3)


# --- not a checkpoint ------------------------------------------------------------------------------
@pytest.mark.parametrize("content,match", [
    (b"", "an empty file"),
    (b"hello, I am a text file\n", "not a checkpoint npvit can read"),
    (open(os.path.join(DATA, "chelsea.png"), "rb").read()[:4096], r"89 50 4e 47"),
])
def test_not_a_checkpoint(tmp_path, content, match):
    p = tmp_path / "x.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        npvit.load(p)


def test_single_npy_and_unknown_layout(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single NumPy array"):
        npvit.load(tmp_path / "a.npy")
    np.savez(tmp_path / "resnet.npz", **{"conv1.weight": np.zeros((8, 3, 7, 7)), "fc.weight": np.zeros((2, 8))})
    with pytest.raises(CheckpointError, match=r"in no ViT layout npvit knows.*patch_embed\.proj\.weight"):
        npvit.load(tmp_path / "resnet.npz")


# --- truncated / corrupted ---------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.99, 100])
def test_truncated_npz(tmp_path, keep):
    np.savez(tmp_path / "full.npz", **_timm_like())
    data = (tmp_path / "full.npz").read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    (tmp_path / "cut.npz").write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupted|not a checkpoint"):
        npvit.load(tmp_path / "cut.npz", num_heads=2)


def test_flipped_byte_in_npz_is_caught_by_crc(tmp_path):
    np.savez(tmp_path / "full.npz", **_timm_like())
    data = bytearray((tmp_path / "full.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        npvit.load(tmp_path / "bad.npz", num_heads=2)


def _st_bytes(header, data=b""):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_truncated_safetensors(tmp_path):
    from npvit.formats.safetensors import write_safetensors

    write_safetensors(tmp_path / "full.safetensors", _timm_like())
    data = (tmp_path / "full.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    for cut, match in ((5, "not a checkpoint"), (8 + n // 2, "not a checkpoint|truncated"),
                       (len(data) - 10, "truncated")):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=match):
            npvit.load(tmp_path / "cut.safetensors", num_heads=2)


# --- hostile safetensors headers -------------------------------------------------------------------
@pytest.mark.parametrize("header,data,match", [
    ({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, b"\0" * 16, r"integers in 0\.\.2,147"),
    ({"w": {"dtype": "F32", "shape": [2**30, 2**30], "data_offsets": [0, 16]}}, b"\0" * 16, "inconsistent"),
    ({"w": {"dtype": "F32", "shape": [0, 2**31, 2**31], "data_offsets": [0, 0]}}, b"", "empty but its other dim"),
    ({"w": {"dtype": "F32", "shape": [2**31, 2**31, 2**31, 2**31], "data_offsets": [0, 2**126]}}, b"\0" * 16,
     "truncated"),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, b"\0" * 16, "integers in 0"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "begin <= end"),
    ({"w": {"dtype": "PYOBJ", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "not supported"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"__metadata__": {"k": 1}}, b"", "strings"),
    ([1, 2, 3], b"", "not a checkpoint"),  # the sniff wants a JSON object
])
def test_hostile_safetensors_header(tmp_path, header, data, match):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(_st_bytes(header, data))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match):
            npvit.load(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"refusing a tiny file allocated {peak:,} bytes"


def test_huge_header_length_is_refused_unread(tmp_path):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + b"{" + b" " * 64)
    with pytest.raises(CheckpointError, match="not a checkpoint"):  # the sniff refuses it already
        npvit.load(p)
    from npvit.formats.safetensors import read_header

    with pytest.raises(CheckpointError, match="header claims 1,000,000,000,000 bytes"):
        read_header(p)


# --- wrong dtypes, object arrays, pickles --------------------------------------------------------------
def test_integer_weights_are_refused(tmp_path):
    sd = _timm_like()
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].astype(np.int32)
    np.savez(tmp_path / "int.npz", **sd)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight.*dtype int32"):
        npvit.load(tmp_path / "int.npz", num_heads=2)
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].astype("U3")
    np.savez(tmp_path / "str.npz", **sd)
    with pytest.raises(CheckpointError, match="dtype <U3"):
        npvit.load(tmp_path / "str.npz", num_heads=2)


def test_object_array_in_npz_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    sd = _timm_like()
    sd["head.weight"] = np.array([Payload(marker)], dtype=object)
    np.savez(tmp_path / "obj.npz", **sd)  # np.savez pickles object arrays by default
    with pytest.raises(CheckpointError, match="dtype=object"):
        npvit.load(tmp_path / "obj.npz", num_heads=2)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_running_pickle_is_refused_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.pth"
    raw.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=4))
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"w": Payload(marker)}, zipped)
    assert not marker.exists()
    for p in (raw, zipped):
        with pytest.raises(CheckpointError, match="torch refused to load this file safely"):
            npvit.load(p)
        assert not marker.exists()
    # control: the payload does run when unpickled unsafely (so the check above means something)
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_pickles_are_refused_unread_without_torch(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    files = [tmp_path / "evil.bin"]
    files[0].write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=2))
    try:  # a zip-based torch file too, if torch is here to write one
        import torch

        torch.save({"w": Payload(marker)}, tmp_path / "evil_zip.pt")
        files.append(tmp_path / "evil_zip.pt")
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    for p in files:
        with pytest.raises(CheckpointError, match=r"needs torch's weights-only loader.*pip install torch"):
            npvit.load(p)
    assert not marker.exists()


# --- inconsistent contents ---------------------------------------------------------------------------
@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.update({"blocks.0.attn.qkv.weight": np.zeros((40, 16), np.float32)}),
     r"blocks\.0\.attn\.qkv\.weight: expected \(48, 16\), got \(40, 16\)"),
    (lambda sd: sd.pop("blocks.0.norm2.bias"), r"missing blocks\.0\.norm2\.bias"),
    (lambda sd: sd.update({"pos_embed": np.zeros((1, 7, 16), np.float32)}),
     r"6 patch positions, not a square grid"),
    (lambda sd: sd.update({"head.bias": np.zeros((4,), np.float32)}), r"head\.bias: expected \(3,\), got \(4,\)"),
    (lambda sd: sd["norm.weight"].__setitem__(0, np.nan), "NaN or inf"),
    (lambda sd: sd.update({f"blocks.2.{k[9:]}": v for k, v in list(sd.items()) if k.startswith("blocks.0.")}),
     r"blocks \[1\] are missing"),
])
def test_inconsistent_state_dicts(tmp_path, edit, match):
    sd = _timm_like()
    edit(sd)
    np.savez(tmp_path / "bad.npz", **sd)
    with pytest.raises(CheckpointError, match=match):
        npvit.load(tmp_path / "bad.npz", num_heads=2)


def test_inconsistent_official_attention(tmp_path):
    pytest.importorskip("timm")
    from formats_refs import flax_arrays, timm_vit

    arrays = flax_arrays(timm_vit(seed=0).float())
    k = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/key/kernel"
    arrays[k] = arrays[k][:, :3]  # 3 heads where the query has 4
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"key/kernel' has shape \(64, 3, 16\), expected \(64, 4, 16\)"):
        npvit.load(tmp_path / "bad.npz")


def test_damaged_npvit_metadata(tmp_path):
    m = npvit.VisionTransformer(npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2))
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    arrays["__npvit__"] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="npvit description .* is damaged"):
        npvit.load(tmp_path / "bad.npz")
    meta = json.loads(bytes(np.load(tmp_path / "m.npz")["__npvit__"]))
    meta["version"] = 99
    arrays["__npvit__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", **arrays)
    with pytest.raises(CheckpointError, match="newer npvit"):
        npvit.load(tmp_path / "new.npz")


def test_folder_without_weights_and_bad_config(tmp_path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="cannot be read as JSON"):
        npvit.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(CheckpointError, match="a folder without weights; expected one of model.safetensors"):
        npvit.load(tmp_path)


# --- size limits before any work: .npz / zip records --------------------------------------------------
def _peak_bytes(fn):
    """Peak traced allocation while ``fn`` runs (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(path, match, **kw):
    def run():
        with pytest.raises(CheckpointError, match=match):
            npvit.load(path, **kw)
    return _peak_bytes(run)


def _npy_bytes(arr, shape=None):
    """An .npy member holding ``arr``'s bytes under a header that claims ``shape`` if given."""
    header = repr({"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
                   "shape": tuple(arr.shape if shape is None else shape)}).encode("latin-1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + np.ascontiguousarray(arr).tobytes()


def _zip(path, members, method=None):
    import zipfile

    with zipfile.ZipFile(path, "w", method if method is not None else zipfile.ZIP_STORED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return path


def test_npy_header_declaring_a_gigabyte_is_refused_unread(tmp_path):
    members = {f"{k}.npy": _npy_bytes(v) for k, v in _timm_like().items()}
    members["blocks.0.mlp.fc1.weight.npy"] = _npy_bytes(np.zeros((32, 16), np.float32), shape=(2**28,))
    p = _zip(tmp_path / "evil.npz", members)
    peak = _refused(p, r"declares shape \(268435456,\) of float32 \(1,073,741,824 bytes\) but the archive "
                       r"member holds 2,048 bytes", num_heads=2)
    assert peak < 2_000_000, f"refusing a {os.path.getsize(p):,}-byte file allocated {peak:,} bytes"
    # control: the same archive with an honest header loads
    members["blocks.0.mlp.fc1.weight.npy"] = _npy_bytes(np.zeros((32, 16), np.float32))
    npvit.load(_zip(tmp_path / "ok.npz", members), num_heads=2)


def test_npvit_file_arrays_checked_against_its_config_before_reading(tmp_path):
    m = npvit.VisionTransformer(npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2))
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        members = {f"{k}.npy": _npy_bytes(z[k]) for k in z.files}
    members["head.weight.npy"] = _npy_bytes(np.zeros((2000, 8), np.float32))  # consistent in itself
    peak = _refused(_zip(tmp_path / "bad.npz", members),
                    r"array 'head.weight' is declared \(2000, 8\) but the stored config makes it \(1000, 8\)")
    assert peak < 1_000_000


def test_zip_member_claiming_more_than_the_file_holds(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, **_timm_like())
    data = bytearray(p.read_bytes())
    at = data.rfind(b"PK\x01\x02")                 # the last member's central directory record
    struct.pack_into("<II", data, at + 20, 2**30, 2**30)   # compressed and uncompressed size: 1 GiB
    p.write_bytes(bytes(data))
    peak = _refused(p, r"its data would end at byte [\d,]+ of a [\d,]+-byte file", num_heads=2)
    assert peak < 2_000_000


def test_deflate_bomb_is_refused_before_decompressing(tmp_path):
    import zipfile

    p = tmp_path / "bomb.npz"
    members = {f"{k}.npy": _npy_bytes(v) for k, v in _timm_like().items()}
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
        with z.open("zeros.npy", "w") as f:           # 64 MiB of zeros deflate to ~64 KiB
            f.write(_npy_bytes(np.zeros(0, np.float32), shape=(2**24,))[:128])
            block = bytes(1 << 20)
            for _ in range(64):
                f.write(block)
    assert os.path.getsize(p) < 1_000_000
    peak = _refused(p, r"zip member 'zeros.npy': declares 67,108,992 bytes from [\d,]+ compressed "
                       r"\(more than 64x: a decompression bomb", num_heads=2)
    assert peak < 2_000_000


def test_zip64_end_record_declaring_a_billion_members(tmp_path):
    p = tmp_path / "many.npz"
    np.savez(p, **_timm_like())
    data = p.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12:eocd + 20])
    body = data[:eocd]
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 10**9, 10**9, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0)
    p.write_bytes(body + z64 + locator + end)
    _refused(p, "declares 1,000,000,000 members", num_heads=2)


@pytest.mark.parametrize("damage,match", [
    ("flip_deflated", r"'cls_token': cannot be read from the archive \((error|BadZipFile): .*\): the file is "
                      "truncated or corrupted"),
    ("version", r"a zip archive using a feature no checkpoint writer uses \(zip file version 9\.9\)"),
    ("method", "compression method 99"),
    ("encrypted", "encrypted"),
    ("name_dotdot", "a name that no checkpoint writer produces"),
    ("name_absolute", "a name that no checkpoint writer produces"),
    ("name_nul", r"neither a NumPy \.npz"),       # zipfile cuts a name at its NUL byte
    ("duplicate", "appears twice"),
])
def test_corrupt_zip_containers(tmp_path, damage, match):
    import zipfile

    members = {f"{k}.npy": _npy_bytes(v) for k, v in _timm_like().items()}
    if damage == "duplicate":
        members = list(members.items()) + [("norm.bias.npy", _npy_bytes(np.zeros(16, np.float32)))]
        with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(tmp_path / "x.npz", "w") as z:
            for name, payload in members:
                z.writestr(name, payload)
        p = tmp_path / "x.npz"
    else:
        if damage == "name_dotdot":
            members["../head.bias.npy"] = members.pop("head.bias.npy")
        if damage == "name_nul":
            members["head.bias\0.npy"] = members.pop("head.bias.npy")
        if damage == "name_absolute":
            members["/head.bias.npy"] = members.pop("head.bias.npy")
        p = _zip(tmp_path / "x.npz", members,
                 zipfile.ZIP_DEFLATED if damage == "flip_deflated" else zipfile.ZIP_STORED)
        data = bytearray(p.read_bytes())
        local = data.find(b"PK\x03\x04")
        central = data.rfind(b"PK\x01\x02")
        if damage == "flip_deflated":
            data[local + 30 + len("cls_token.npy") + 5] ^= 0xFF     # inside the first member's stream
        elif damage == "version":
            struct.pack_into("<H", data, central + 6, 99)           # "version needed to extract" 9.9
        elif damage == "method":
            struct.pack_into("<H", data, central + 10, 99)
        elif damage == "encrypted":
            struct.pack_into("<H", data, central + 8, 1)
        p.write_bytes(bytes(data))
    _refused(p, match, num_heads=2)


# --- malformed JSON and wrong types in configs -----------------------------------------------------
def _tiny_npvit(tmp_path):
    m = npvit.VisionTransformer(npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2,
                                                num_classes=3))
    return m, m.save(tmp_path / "m.npz")


def _rewrite_npvit_meta(src, dst, edit):
    with np.load(src) as z:
        arrays = dict(z)
    meta = json.loads(arrays["__npvit__"].tobytes())
    text = edit(meta)
    arrays["__npvit__"] = np.frombuffer(text.encode() if isinstance(text, str) else json.dumps(meta).encode(),
                                        dtype=np.uint8)
    np.savez(dst, **arrays)
    return dst


@pytest.mark.parametrize("edit,match", [
    (lambda meta: meta["config"].update(num_heads=True), r"config: num_heads is true \(a boolean\)"),
    (lambda meta: meta["config"].update(num_heads=2.0), r"config: num_heads is 2\.0 \(a number\)"),
    (lambda meta: meta["config"].update(embed_dim="16"), r"config: embed_dim is \"16\" \(a string\)"),
    (lambda meta: meta["config"].update(img_size=[8, 8, 8]), r"config: img_size is \[8, 8, 8\]"),
    (lambda meta: meta["config"].update(qkv_bias=1), r"config: qkv_bias is 1 \(an integer\)"),
    (lambda meta: meta["config"].update(label_names=[1, 2, 3]), r"config: label_names is \[1, 2, 3\]"),
    (lambda meta: meta["preprocess"].update(mean=[0.5, 0.5]), r"preprocess: mean is \[0\.5, 0\.5\]"),
    (lambda meta: meta.update(version="1"), r"version is \"1\" \(a string\), expected an integer"),
    (lambda meta: "[" * 100_000 + "]" * 100_000, "JSON nested more than 32 levels deep"),
    (lambda meta: '{"format": "npvit", "format": "npvit"}', "key 'format' appears twice"),
    (lambda meta: json.dumps(meta).replace('"norm_eps": 1e-06', '"norm_eps": NaN'), "NaN is not JSON"),
])
def test_npvit_description_with_wrong_types(tmp_path, edit, match):
    """A file that says num_heads=true must not load as a 1-head model (int(True) == 1)."""
    m, path = _tiny_npvit(tmp_path)
    m.preprocess = npvit.preprocess.preset("timm", 8)
    m.save(path)
    assert npvit.load(path).config.num_heads == 2  # control: the untouched file loads
    bad = _rewrite_npvit_meta(path, tmp_path / "bad.npz", edit)
    with pytest.raises(CheckpointError, match=r"npvit description \(__npvit__\) is damaged: .*" + match):
        npvit.load(bad)


def _hf_folder(tmp_path, config_edit=None, processor_edit=None):
    from npvit.formats.safetensors import write_safetensors

    sd = _timm_like(dim=16, depth=1)
    hf = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
          "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
          "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
          "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
          "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    h = "vit.encoder.layer.0."
    for n, part in zip(("query", "key", "value"), np.split(sd["blocks.0.attn.qkv.weight"], 3)):
        hf[f"{h}attention.attention.{n}.weight"] = part
    for n, part in zip(("query", "key", "value"), np.split(sd["blocks.0.attn.qkv.bias"], 3)):
        hf[f"{h}attention.attention.{n}.bias"] = part
    for src, dst in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
                     ("attn.proj", "attention.output.dense"), ("mlp.fc2", "output.dense")):
        hf[f"{h}{dst}.weight"], hf[f"{h}{dst}.bias"] = sd[f"blocks.0.{src}.weight"], sd[f"blocks.0.{src}.bias"]
    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    write_safetensors(folder / "model.safetensors", hf)
    config = {"model_type": "vit", "num_attention_heads": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
              "image_size": 8, "id2label": {"0": "a", "1": "b", "2": "c"}}
    processor = {"size": {"height": 8, "width": 8}, "resample": 2, "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5]}
    for name, obj, edit in (("config.json", config, config_edit),
                            ("preprocessor_config.json", processor, processor_edit)):
        text = edit(obj) if edit else None
        (folder / name).write_text(text if isinstance(text, str) else json.dumps(obj))
    return folder


@pytest.mark.parametrize("config_edit,processor_edit,match", [
    (lambda c: c.update(num_attention_heads=True), None, r"num_attention_heads is true \(a boolean\), expected an integer"),
    (lambda c: c.update(num_attention_heads=0), None, r"num_attention_heads is 0 \(an integer\), expected an integer >= 1"),
    (lambda c: c.update(layer_norm_eps="1e-12"), None, r"layer_norm_eps is \"1e-12\" \(a string\)"),
    (lambda c: c.update(image_size=[8]), None, r"image_size is \[8\] \(a list\)"),
    (lambda c: c.update(id2label={"0": 1, "1": 2, "2": 3}), None, "id2label must map class indices to names"),
    (lambda c: c.update(hidden_act=["gelu"]), None, r"hidden_act is \[\"gelu\"\] \(a list\), expected a string"),
    (lambda c: "[" * 50_000 + "]" * 50_000, None, "JSON nested more than 32 levels deep"),
    (None, lambda p: p.update(image_mean="0.5"), r"image_mean is \"0\.5\" \(a string\), expected a list of 3"),
    (None, lambda p: p.update(size="8"), r"size is \"8\" \(a string\), expected an object"),
    (None, lambda p: p["size"].update(height=True), r"size: height is true \(a boolean\)"),
    (None, lambda p: p.update(resample="bicubic"), r"resample is \"bicubic\" \(a string\)"),
    (None, lambda p: '{"size": ' * 5000 + "1" + "}" * 5000, "JSON nested more than 32 levels deep"),
    (None, lambda p: '{"size": ' * 40 + "1" + "}" * 40, "JSON nested more than 32 levels deep"),  # parses anywhere
])
def test_hf_configs_with_wrong_types(tmp_path, config_edit, processor_edit, match):
    assert npvit.load(_hf_folder(tmp_path)).config.num_heads == 2  # control
    folder = _hf_folder(tmp_path, config_edit, processor_edit)
    with pytest.raises(CheckpointError, match=match):
        npvit.load(folder)


def test_old_feature_extractor_size_is_a_square(tmp_path):
    """google/vit-base-patch16-224's preprocessor_config.json says "size": 224 (ViTFeatureExtractor)."""
    folder = _hf_folder(tmp_path, processor_edit=lambda p: p.update(size=8, feature_extractor_type="ViTFeatureExtractor"))
    pre = npvit.load(folder).preprocess
    assert pre.input_size == (8, 8) and pre.crop_mode == "squash" and pre.interpolation == "bilinear"


def test_timm_metadata_and_hub_config_with_wrong_types(tmp_path):
    from npvit.formats.export import save_timm
    from npvit.formats.safetensors import read_safetensors, write_safetensors

    m, _ = _tiny_npvit(tmp_path)
    save_timm(m, tmp_path / "t.safetensors")
    assert npvit.load(tmp_path / "t.safetensors").config.num_heads == 2  # control
    arrays, meta = read_safetensors(tmp_path / "t.safetensors")
    cfg = json.loads(meta["npvit.config"])
    write_safetensors(tmp_path / "bad.safetensors", arrays, dict(meta, **{"npvit.config": json.dumps(dict(cfg, num_heads=True))}))
    with pytest.raises(CheckpointError, match=r"npvit.config metadata: num_heads is true \(a boolean\)"):
        npvit.load(tmp_path / "bad.safetensors")
    hub = tmp_path / "hub"
    hub.mkdir()
    write_safetensors(hub / "model.safetensors", arrays)
    (hub / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224",
                                                 "model_args": {"num_heads": True, "img_size": 8}}))
    with pytest.raises(CheckpointError, match=r"model_args: num_heads is true \(a boolean\)"):
        npvit.load(hub)


def test_safetensors_header_duplicate_keys_and_entry_count(tmp_path):
    p = tmp_path / "dup.safetensors"
    text = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    p.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(CheckpointError, match="key 'w' appears twice"):
        npvit.load(p)
    from npvit.formats.safetensors import MAX_ENTRIES

    n = MAX_ENTRIES // 4 + 1   # each tensor entry has 4 JSON entries (itself, dtype, shape, offsets)
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)}
    p.write_bytes(_st_bytes(header))
    with pytest.raises(CheckpointError, match=f"more than {MAX_ENTRIES:,} JSON entries"):
        npvit.load(p)


# --- PyTorch files: what torch's safe loader lets through but npvit must not use ----------------------
@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")  # torch's own note on sparse loads
@pytest.mark.parametrize("kind,match", [
    ("sparse", r"tensor 'norm\.weight' is sparse_coo \(a sparse tensor\)"),
    ("meta", r"tensor 'norm\.weight' is a meta tensor"),
    ("int_key", r"key 7 \(int\) is not a string"),
    ("complex", r"tensor 'norm\.weight' has dtype torch\.complex64"),
])
def test_torch_tensors_that_hold_no_dense_weights(tmp_path, kind, match):
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v) for k, v in _timm_like().items()}
    torch.save(sd, tmp_path / "ok.pth")
    assert npvit.load(tmp_path / "ok.pth", num_heads=2).config.embed_dim == 16  # control
    if kind == "sparse":
        sd["norm.weight"] = sd["norm.weight"].to_sparse()
    elif kind == "meta":
        sd["norm.weight"] = torch.empty(16, device="meta")
    elif kind == "int_key":
        sd[7] = sd.pop("norm.weight")
    else:
        sd["norm.weight"] = sd["norm.weight"].to(torch.complex64)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=match):
        npvit.load(tmp_path / "bad.pth", num_heads=2)
