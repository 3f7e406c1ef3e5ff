"""npvit's own .npz (bit-exact round trip, atomic writes), the NumPy safetensors reader/writer
against the safetensors library, and ``npvit convert`` in both directions."""
import argparse
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvit
from conftest import randomize_params
from formats_refs import assert_close, photos, run_torch, timm_vit
from npvit.cli import convert
from npvit.formats.safetensors import read_safetensors, write_safetensors
from npvit.preprocess.config import preset


def _model(dtype, **kw):
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    args.update(kw)
    m = npvit.VisionTransformer(npvit.ViTConfig(**args), dtype=dtype, seed=1)
    randomize_params(m, seed=2)
    return m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [{}, {"distilled": True}, {"classifier": "gap", "representation_size": 16},
                                {"gelu": "tanh", "norm_eps": 1e-12, "qkv_bias": False, "mlp_ratio": 2.5,
                                 "label_names": tuple("abcde"), "img_size": (32, 16)}])
def test_round_trip_is_bit_exact(tmp_path, dtype, kw):
    m = _model(dtype, **kw)
    m.preprocess = preset("deit", (32, 32)).replace(crop_pct=0.95)
    path = tmp_path / "m.npz"
    assert npvit.save(m, path) == path
    back = npvit.load(path)
    assert back.dtype == dtype and back.config == m.config and back.preprocess == m.preprocess
    assert back.config.label_names == m.config.label_names
    assert back.params.keys() == m.params.keys()
    for k, v in m.params.items():
        assert back.params[k].dtype == v.dtype and np.array_equal(back.params[k], v), k
    x = np.random.default_rng(0).standard_normal((2, 3) + m.config.img_size)
    assert np.array_equal(back(x), m(x))
    # the archive is plain NumPy: readable with allow_pickle=False, config as JSON bytes
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__npvit__"].tobytes())
    assert meta["config"]["embed_dim"] == 32 and meta["dtype"] == dtype


def test_model_save_method_and_atomic_write(tmp_path, monkeypatch):
    m = _model("float32")
    path = tmp_path / "m.npz"
    m.save(path)
    before = path.read_bytes()
    # a failure while writing leaves the old file intact and no temporary file behind
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        _model("float32", num_classes=3).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_loading_as_another_dtype(tmp_path):
    m = _model("float64")
    m.save(tmp_path / "m.npz")
    assert npvit.load(tmp_path / "m.npz", dtype="float32").params["pos_embed"].dtype == np.float32


def test_missing_file_says_so():
    with pytest.raises(FileNotFoundError, match="no such checkpoint file or folder: 'digits_vit_nope'"):
        npvit.load("digits_vit_nope")


# --- safetensors: our NumPy reader/writer against the reference library ---------------------------
_DTYPES = ["float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"]


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 5), max_size=4), min_size=1, max_size=5),
       dtypes=st.lists(st.sampled_from(_DTYPES), min_size=5, max_size=5), seed=st.integers(0, 2**31),
       transpose=st.booleans())
def test_safetensors_round_trip_with_reference(tmp_path_factory, shapes, dtypes, seed, transpose):
    reference = pytest.importorskip("safetensors.numpy")    # the NumPy-only CI runs lack it
    load_file, save_file = reference.load_file, reference.save_file

    rng = np.random.default_rng(seed)
    arrays = {}
    for i, shape in enumerate(shapes):
        a = np.asarray(rng.standard_normal(shape) * 50).astype(dtypes[i])
        arrays[f"t{i}.weight"] = a.T if transpose else a  # non-contiguous views must be written in order
    d = tmp_path_factory.mktemp("st")
    write_safetensors(d / "ours.safetensors", arrays, {"note": "x"})
    theirs = load_file(str(d / "ours.safetensors"))
    save_file({k: v.copy(order="C") for k, v in arrays.items()}, str(d / "ref.safetensors"))
    ours_read, meta = read_safetensors(d / "ref.safetensors")
    ours_own, meta_own = read_safetensors(d / "ours.safetensors")
    assert meta_own == {"note": "x"}
    for k, a in arrays.items():
        for got in (theirs[k], ours_read[k], ours_own[k]):
            assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a), k


def test_safetensors_bf16_reads_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    t = torch.randn(3, 4)
    save_file({"w": t.bfloat16()}, str(tmp_path / "b.safetensors"))
    arrays, _ = read_safetensors(tmp_path / "b.safetensors")
    assert arrays["w"].dtype == np.float32
    assert np.array_equal(arrays["w"], t.bfloat16().float().numpy())


# --- npvit convert -------------------------------------------------------------------------------
def _convert(*argv):
    parser = argparse.ArgumentParser(prog="npvit")
    convert.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["convert", *map(str, argv)])
    return args.func(args)


def test_convert_to_timm_safetensors_and_back(tmp_path, capsys):
    """official npz -> timm safetensors (our writer) -> timm's own model, and -> npvit npz -> npvit."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from formats_refs import write_flax_npz
    from safetensors.torch import load_file

    src = timm_vit(seed=50).float()
    npz = write_flax_npz(src, str(tmp_path / "official.npz"))
    assert _convert(npz, tmp_path / "vit.safetensors", "--gelu", "exact") == 0
    assert "wrote" in capsys.readouterr().out
    ref = timm_vit(seed=99)
    ref.load_state_dict(load_file(str(tmp_path / "vit.safetensors")))  # strict: every name, every shape
    x = photos(32, "float32")
    assert_close(run_torch(ref.eval(), x), run_torch(src, x), "float32")
    # the file carries npvit's config: heads need no override, GELU stays as converted
    back = npvit.load(tmp_path / "vit.safetensors")
    assert back.config.num_heads == 4 and back.config.gelu == "exact"

    assert _convert(npz, tmp_path / "vit_npvit.npz") == 0
    m = npvit.load(tmp_path / "vit_npvit.npz")
    assert m.config.gelu == "tanh" and m.preprocess == npvit.load(npz).preprocess
    for k, v in npvit.load(npz).params.items():
        assert np.array_equal(m.params[k], v), k
    with pytest.raises(ValueError, match="exists; pass --force"):
        _convert(npz, tmp_path / "vit_npvit.npz")


def test_convert_to_pth_and_notes(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    m = _model("float32", gelu="tanh", representation_size=16)
    m.save(tmp_path / "m.npz")
    assert _convert(tmp_path / "m.npz", tmp_path / "m.pth", "--to", "timm") == 0
    out = capsys.readouterr().out
    assert "GELUTanh" in out and "representation layer" in out
    sd = torch.load(tmp_path / "m.pth", weights_only=True)
    for k, v in m.params.items():
        assert np.array_equal(sd[k].numpy(), v), k


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the final file must get 0666 minus the umask,
    like any file a program creates, or other users could not read a shared checkpoint."""
    import os
    import stat

    import npvit

    umask = os.umask(0o022)
    try:
        path = tmp_path / "m.npz"
        npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
