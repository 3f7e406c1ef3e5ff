"""Position-embedding resampling against the implementations it reproduces.

"bicubic" = timm's resample_abs_pos_embed defaults (bicubic, antialias=True), "bilinear" = timm's npz
path (bilinear, antialias=False), "linear_corners" = the official code's scipy.ndimage.zoom(order=1).
Tolerance: torch interpolates in float32 (weights and sums), npvit in float64, so values of
magnitude ~1 differ by float32 rounding, a few 1e-7; 2e-6 relative to the largest value allows
that and fails on any wrong weight (O(0.1)).  scipy computes in float64 like npvit: 1e-12.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvit
from formats_refs import assert_close, photos, randomize, run_torch, timm_vit, write_flax_npz
from npvit.formats.resample import resample_pos_embed

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

grids = st.tuples(st.integers(1, 12), st.integers(1, 12))


def _posemb(seed, prefix, grid, dim=5):
    return np.random.default_rng(seed).standard_normal((1, prefix + grid[0] * grid[1], dim)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(old=grids, new=grids, prefix=st.integers(0, 2), seed=st.integers(0, 2**31),
       method=st.sampled_from(["bicubic", "bilinear"]))
def test_matches_timm(old, new, prefix, seed, method):
    from timm.layers import resample_abs_pos_embed

    pe = _posemb(seed, prefix, old)
    ref = resample_abs_pos_embed(torch.from_numpy(pe), new_size=list(new), old_size=list(old),
                                 num_prefix_tokens=prefix, interpolation=method,
                                 antialias=(method == "bicubic")).numpy()
    out = resample_pos_embed(pe, old, new, prefix, method)
    assert out.dtype == pe.dtype
    np.testing.assert_array_equal(out[:, :prefix], pe[:, :prefix])  # prefix tokens kept as they are
    err = np.abs(out.astype(np.float64) - ref).max()
    assert err <= 2e-6 * np.abs(ref).max(), err


@settings(max_examples=40, deadline=None)
@given(old=grids, new=st.tuples(st.integers(2, 16), st.integers(2, 16)), seed=st.integers(0, 2**31))
def test_linear_corners_matches_scipy_zoom(old, new, seed):
    pe = _posemb(seed, 1, old).astype(np.float64)
    grid = pe[0, 1:].reshape(old[0], old[1], -1)
    ref = scipy_ndimage.zoom(grid, (new[0] / old[0], new[1] / old[1], 1), order=1)
    if ref.shape[:2] != tuple(new):  # scipy rounds the zoomed size; only compare where it is `new`
        return
    out = resample_pos_embed(pe, old, new, 1, "linear_corners")[0, 1:].reshape(ref.shape)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))


def test_same_grid_is_untouched_and_bad_input_refused():
    pe = _posemb(0, 1, (3, 3))
    assert resample_pos_embed(pe, (3, 3), (3, 3), 1) is pe
    with pytest.raises(ValueError, match="posemb_interpolation"):
        resample_pos_embed(pe, (3, 3), (4, 4), 1, "nearest")
    with pytest.raises(ValueError, match="expected 1 prefix tokens"):
        resample_pos_embed(pe, (4, 4), (5, 5), 1)


@pytest.mark.parametrize("new", [48, (48, 24)])
def test_timm_file_at_another_size_matches_timm(tmp_path, new):
    """A 32px timm state dict loaded at 48 (or 48x24): timm's checkpoint_filter_fn resamples the
    same way (bicubic, antialias) when it builds the bigger model."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    src = timm_vit(seed=40)
    path = tmp_path / "vit.pth"
    torch.save(src.state_dict(), path)
    ref = VisionTransformer(img_size=new, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    ref.load_state_dict(checkpoint_filter_fn(torch.load(path), ref))
    m = npvit.load(path, num_heads=4, img_size=new)
    size = (new, new) if isinstance(new, int) else new
    assert m.config.img_size == size and m.preprocess.input_size == size
    x = photos(size, "float32")
    assert_close(m(x), run_torch(ref.eval(), x), "float32")


def test_official_file_at_another_size(tmp_path):
    """Default for official files: the official code's scipy zoom (order 1) of the patch grid; with
    posemb_interpolation='bilinear', timm's own npz loader (bilinear, no antialias)."""
    src = timm_vit(seed=41, gelu="tanh").float()
    path = write_flax_npz(src, str(tmp_path / "vit.npz"))
    m = npvit.load(path, img_size=56, dtype="float64")
    # the file holds float32; both sides interpolate in float64 and round to float32 once
    file_pe = np.load(path)["Transformer/posembed_input/pos_embedding"]
    grid = scipy_ndimage.zoom(file_pe[0, 1:].reshape(4, 4, 64), (7 / 4, 7 / 4, 1), order=1)
    want = np.concatenate([file_pe[:, :1], grid.reshape(1, 49, 64)], axis=1)
    np.testing.assert_allclose(m.params["pos_embed"], want, rtol=1.2e-7, atol=0)

    from formats_refs import timm_from_npz

    ref = timm_from_npz(path, gelu="tanh", img_size=56)   # timm resamples on load: bilinear
    mb = npvit.load(path, img_size=56, posemb_interpolation="bilinear")
    x = photos(56, "float32")
    assert_close(mb(x), run_torch(ref, x), "float32")
    # negative control: the corner-aligned resampling is a different embedding
    assert np.abs(m.params["pos_embed"] - mb.params["pos_embed"]).max() > 1e-3


def test_img_size_must_fit_the_patch(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(randomize(timm_vit(seed=42)).state_dict(), path)
    with pytest.raises(ValueError, match="patch_size"):
        npvit.load(path, num_heads=4, img_size=36)
