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
