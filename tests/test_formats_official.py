"""Google official ViT .npz and big_vision .npz: npvit.load against timm's own npz loader.

Each file is written from a randomised timm model by the test writer in formats_refs.py; the writer
is first checked by loading the file into a fresh timm model with timm's ``_load_weights`` (every
parameter must come back).  Then npvit's logits on real photos are compared with timm's, with the
GELU form matched (the official models use tanh-GELU, npvit's default for these files).
"""
import numpy as np
import pytest

import npvit
from formats_refs import (assert_close, photos, run_torch, timm_from_npz, timm_vit, torch_tail,
                          write_flax_npz)

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

# (layout, prefix, timm kwargs that make timm compute what the layout means)
CASES = [
    ("official", "", {}),
    ("official", "opt/target/", {}),
    ("big_vision", "params/", {"no_embed_class": True}),                 # 'tok' pooling
    ("big_vision_stacked", "params/", {"no_embed_class": True}),
    ("big_vision", "params/", {"class_token": False, "global_pool": "avg", "fc_norm": False}),  # 'gap'
]


def _same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


@pytest.mark.parametrize("layout,prefix,kw", CASES, ids=lambda c: c if isinstance(c, str) else None)
def test_writer_round_trips_through_timms_loader(tmp_path, layout, prefix, kw):
    src = timm_vit(seed=1, **kw).float()
    path = write_flax_npz(src, str(tmp_path / "vit.npz"), layout=layout, prefix=prefix)
    _same_params(timm_from_npz(path, **kw), src)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,prefix,kw", CASES, ids=lambda c: c if isinstance(c, str) else None)
def test_logits_match_timm(tmp_path, layout, prefix, kw, dtype):
    src = timm_vit(seed=2, gelu="tanh", **kw).float()
    path = write_flax_npz(src, str(tmp_path / "vit.npz"), layout=layout, prefix=prefix)
    ref = timm_from_npz(path, gelu="tanh", **kw)
    m = npvit.load(path, dtype=dtype)
    assert m.config.gelu == "tanh" and m.config.num_heads == 4 and m.config.img_size == (32, 32)
    assert m.config.classifier == ("gap" if kw.get("class_token") is False else "token")
    assert m.preprocess.crop_mode == "squash" and m.preprocess.mean == (0.5, 0.5, 0.5)
    x = photos(32, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)


def test_gelu_exact_override(tmp_path):
    src = timm_vit(seed=3).float()
    path = write_flax_npz(src, str(tmp_path / "vit.npz"))
    x = photos(32, "float64")
    ref = run_torch(timm_from_npz(path), x)                      # exact GELU in timm
    assert_close(npvit.load(path, dtype="float64", gelu="exact")(x), ref, "float64")
    # negative control: the default (tanh) form is measurably different on the same weights
    err = np.abs(npvit.load(path, dtype="float64")(x) - ref).max()
    assert err > 1e3 * 1e-9 * np.abs(ref).max()


def test_representation_layer_21k_style(tmp_path):
    """pre_logits (ImageNet-21k files): tanh(dense) before the head; timm dropped the layer, so the
    reference is timm's pooled features followed by that layer and the head in torch."""
    body = timm_vit(seed=4, gelu="tanh", num_classes=0).double()
    g = torch.Generator().manual_seed(5)
    rep = (torch.randn(48, 64, generator=g, dtype=torch.float64) * 0.2,
           torch.randn(48, generator=g, dtype=torch.float64) * 0.2)
    head = (torch.randn(21, 48, generator=g, dtype=torch.float64) * 0.2,
            torch.randn(21, generator=g, dtype=torch.float64) * 0.2)
    from formats_refs import flax_arrays

    arrays = flax_arrays(body, pre_logits=(rep[0].numpy(), rep[1].numpy()))
    arrays["head/kernel"] = head[0].numpy().T.astype(np.float32)
    arrays["head/bias"] = head[1].numpy().astype(np.float32)
    path = str(tmp_path / "i21k.npz")
    np.savez(path, **arrays)
    m = npvit.load(path, dtype="float64")
    assert m.config.representation_size == 48 and m.config.num_classes == 21
    x = photos(32, "float64")
    # the reference must use the file's (float32-rounded) values, as npvit does
    f32 = {k: torch.from_numpy(v.astype(np.float64)) for k, v in arrays.items()}
    rep32 = (f32["pre_logits/kernel"].T, f32["pre_logits/bias"])
    head32 = (f32["head/kernel"].T, f32["head/bias"])
    ref = timm_from_npz(path, gelu="tanh", num_classes=0).double()
    with torch.no_grad():
        want = torch_tail(ref(torch.from_numpy(x)), rep32, head32).numpy()
    assert_close(m(x), want, "float64")
    # dropping the representation layer is allowed only together with a new head
    with pytest.raises(ValueError, match="num_classes"):
        npvit.load(path, representation_size=None)
    with pytest.warns(UserWarning, match="representation layer"):
        feats = npvit.load(path, representation_size=None, num_classes=0, dtype="float64")
    assert feats.config.representation_size is None and feats(x).shape == (2, 64)


def test_heads_come_from_the_file_and_cannot_be_contradicted(tmp_path):
    path = write_flax_npz(timm_vit(seed=6, num_heads=2).float(), str(tmp_path / "vit.npz"))
    assert npvit.load(path).config.num_heads == 2
    with pytest.raises(ValueError, match="num_heads=4 contradicts the file"):
        npvit.load(path, num_heads=4)


def test_non_square_grid_needs_img_size(tmp_path):
    src = timm_vit(seed=7, img_size=(32, 48)).float()
    path = write_flax_npz(src, str(tmp_path / "wide.npz"))
    with pytest.raises(ValueError, match=r"not a square grid; pass img_size=\(H, W\)"):
        npvit.load(path)
    m = npvit.load(path, img_size=(32, 48), gelu="exact", dtype="float64")
    x = photos((32, 48), "float64")
    assert_close(m(x), run_torch(timm_from_npz(path, img_size=(32, 48)), x), "float64")
