"""Preprocessing: the NumPy resize against Pillow, the transforms against timm, torchvision and
Hugging Face on real photos, and the image readers' handling of every input kind and bad input.

Tolerances. Pillow and our resize both end in uint8, so equality is exact or off by whole levels;
one level is 1/255 before normalisation (2/255 = 7.8e-3 after mean = std = 0.5). Where the same
uint8 pixels go through the same float32 operations (x / 255, - mean, / std; IEEE-rounded), the
results are identical, so ``atol = 1e-6`` there leaves room for nothing but a change of the order
of operations and fails on any one-level pixel difference.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvit.preprocess import PreprocessConfig, preprocess, preset, to_rgb, to_rgb_list
from npvit.preprocess import resize as resize_mod
from npvit.preprocess.resize import resize
from npvit.preprocess.transform import center_crop, resized_size

Image = pytest.importorskip("PIL.Image")

DATA = Path(__file__).parent / "data"
PHOTOS = ("chelsea", "coffee")
EXACT = 1e-6  # see the module docstring
PIL_METHOD = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
# npvit reproduces Pillow 13's pass order (see resize.py); Pillow 12, the newest on Python 3.10,
# always resizes horizontally first and differs by a level on some pixels.
PILLOW_13 = pytest.mark.skipif(int(Image.__version__.split(".")[0]) < 13,
                               reason=f"bit-exactness is with Pillow 13's pass order; this is Pillow {Image.__version__}")


@pytest.fixture(scope="module")
def photos():
    return {n: Image.open(DATA / f"{n}.png").convert("RGB") for n in PHOTOS}


def pil_resize(a, size, method):
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), PIL_METHOD[method]))


# --- resize vs Pillow ------------------------------------------------------------------------
@PILLOW_13
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), oh=st.integers(1, 90), ow=st.integers(1, 90),
       channels=st.sampled_from([1, 3]), method=st.sampled_from(["bicubic", "bilinear"]),
       seed=st.integers(0, 2**31 - 1))
def test_resize_uint8_equals_pillow(h, w, oh, ow, channels, method, seed):
    """Random sizes up and down, RGB and grey ("L"): identical to Pillow, pixel for pixel."""
    a = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    ref = pil_resize(a[..., 0] if channels == 1 else a, (oh, ow), method)
    got = resize(a, (oh, ow), method)
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)


@PILLOW_13
@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_resize_photos_equal_pillow(photos, method):
    # Sizes a predict run meets (224, short side 248/256, 384 upscale) and lopsided ones that take
    # each of Pillow 13's two pass orders.
    for name, im in photos.items():
        a = np.asarray(im)
        H, W = a.shape[:2]
        for size in [(224, 224), (248, int(248 * W / H)), (384, 384), (7, W + 40), (H + 9, 31)]:
            np.testing.assert_array_equal(resize(a, size, method), pil_resize(a, size, method),
                                          err_msg=f"{name} {size} {method}")


@PILLOW_13
def test_resize_pass_order_matters():
    """Negative control: running the passes in the other order changes pixels, so the tests above
    would catch a wrong order. Pillow 13 goes vertical first when the height loses > 2x the width."""
    a = np.random.default_rng(0).integers(0, 256, (120, 60, 3), dtype=np.uint8)
    size = (20, 80)                                         # height shrinks, width grows
    assert resize_mod.vertical_first(120, 60, *size)
    ref = pil_resize(a, size, "bicubic")
    np.testing.assert_array_equal(resize(a, size), ref)
    one = lambda wts, x: resize_mod._pass_uint8(resize_mod._fixed_point(wts), x)  # noqa: E731
    swapped = resize_mod._vertical(resize_mod._horizontal(a, resize_mod.resize_weights(60, 80), one),
                                   resize_mod.resize_weights(120, 20), one)
    assert np.abs(swapped.astype(int) - ref).max() >= 1


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_resize_float_matches_pillow_mode_f(photos, method):
    """Float images follow Pillow's mode "F": unquantised weights, float32 between the passes.
    atol 2e-7 on values in [0, 1]: float32 steps there are 6e-8; the float64 sums may be added in
    another order than Pillow's loop, which can move the float32 result by an ulp or two."""
    a = np.asarray(photos["chelsea"]).astype(np.float32) / 255
    got = resize(a, (224, 200), method)
    ref = np.stack([np.asarray(Image.fromarray(a[..., c], mode="F").resize((200, 224), PIL_METHOD[method]))
                    for c in range(3)], axis=-1)
    np.testing.assert_allclose(got, ref, atol=2e-7, rtol=0)


def test_resize_without_antialias_matches_torch_and_tf(photos):
    """antialias=False is TF2's tf.image.resize(bilinear) = PyTorch's interpolate(bilinear,
    align_corners=False): two taps at half-pixel centres. Measured against TensorFlow 2.21 on both
    photos at 224 and 384: max |diff| 3.5e-5 after (x - 127.5) / 127.5. PyTorch computes the
    source coordinates in float32, which moves values by up to ~2e-3 levels (8e-6 relative to
    255): atol 5e-3 levels. The antialiased resize differs by whole levels (checked below)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    a = np.asarray(photos["coffee"])
    t = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float()
    for size in [(224, 224), (384, 384), (100, 700)]:
        ref = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
        ref = ref[0].permute(1, 2, 0).numpy()
        got = resize(a, size, "bilinear", antialias=False)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=5e-3, rtol=0, err_msg=str(size))
    antialiased = resize(a, (224, 224), "bilinear").astype(np.float32)
    assert np.abs(antialiased - resize(a, (224, 224), "bilinear", antialias=False)).max() > 5


def test_resize_bad_input():
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="interpolation"):
        resize(a, (2, 2), "lanczos")
    with pytest.raises(ValueError, match="bilinear only"):
        resize(a, (2, 2), "bicubic", antialias=False)
    with pytest.raises(ValueError, match="cannot resize"):
        resize(a, (0, 2))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        resize(np.zeros((4, 4), np.uint8), (2, 2))


# --- transforms vs the frameworks --------------------------------------------------------------
def _timm_cfg(dc):
    return PreprocessConfig(input_size=tuple(dc["input_size"][1:]), interpolation=dc["interpolation"],
                            crop_pct=dc["crop_pct"], crop_mode=dc["crop_mode"], mean=tuple(dc["mean"]),
                            std=tuple(dc["std"]))


@pytest.mark.parametrize("model_name, preset_name", [("vit_tiny_patch16_224", "timm"),
                                                     ("deit_tiny_patch16_224", "deit"),
                                                     ("vit_tiny_patch16_384", "timm"),
                                                     ("deit_base_patch16_384", "deit")])
def test_timm_transform_parity(photos, model_name, preset_name):
    """timm's own eval transform of each model, from resolve_data_config: same tensor."""
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    m = timm.create_model(model_name, pretrained=False, depth=1, num_classes=0)
    dc = resolve_data_config({}, model=m)
    tf = create_transform(**dc)
    # Our preset for that family, at the model's size, is exactly timm's data config.
    assert preset(preset_name, dc["input_size"][1:]) == _timm_cfg(dc)
    for name, im in photos.items():
        np.testing.assert_allclose(preprocess(im, _timm_cfg(dc))[0], tf(im).numpy(), atol=EXACT, rtol=0,
                                   err_msg=name)


@pytest.mark.parametrize("size, mode, crop_pct, interpolation", [
    ((160, 224), "center", 0.9, "bicubic"),     # non-square: timm's ResizeKeepRatio, round()
    ((224, 160), "center", 0.95, "bilinear"),
    ((96, 97), "center", 0.875, "bicubic"),
    ((224, 224), "squash", 0.9, "bicubic"),     # squash then crop
    ((200, 300), "squash", 1.0, "bilinear"),
])
def test_timm_transform_parity_shapes(photos, size, mode, crop_pct, interpolation):
    pytest.importorskip("timm")
    from timm.data import create_transform

    tf = create_transform(input_size=(3,) + size, interpolation=interpolation, crop_pct=crop_pct,
                          crop_mode=mode)
    cfg = PreprocessConfig(input_size=size, interpolation=interpolation, crop_pct=crop_pct, crop_mode=mode,
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    for name, im in photos.items():
        np.testing.assert_allclose(preprocess(im, cfg)[0], tf(im).numpy(), atol=EXACT, rtol=0, err_msg=name)


def test_torchvision_preset_parity(photos):
    """torchvision's ImageClassification (resize on the uint8 tensor, center crop, ImageNet
    mean/std): identical on both photos."""
    tvm = pytest.importorskip("torchvision.models")
    W = tvm.ViT_B_16_Weights
    # IMAGENET1K_V1 at 224; SWAG_E2E at 384 (bicubic, no crop: what preset() switches to above 224)
    for weights, size in [(W.IMAGENET1K_V1, 224), (W.IMAGENET1K_SWAG_E2E_V1, 384)]:
        tf = weights.transforms()
        for name, im in photos.items():
            np.testing.assert_allclose(preprocess(im, preset("torchvision", size))[0], tf(im).numpy(),
                                       atol=EXACT, rtol=0, err_msg=f"{weights} {name}")


def test_seed_preset_parity(photos):
    T = pytest.importorskip("torchvision.transforms")
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    for name, im in photos.items():
        np.testing.assert_allclose(preprocess(im, preset("seed"))[0], tf(im).numpy(), atol=EXACT, rtol=0,
                                   err_msg=name)


def test_hf_processor_parity(photos):
    """Hugging Face's ViTImageProcessor. Its Pillow backend gives the same tensor. Its default
    torchvision backend resizes the uint8 tensor with PyTorch's own antialiased kernel, which
    rounds differently: measured 141 and 314 of 150528 values (0.09%, 0.21%) one level apart on
    the two photos, never more. Allowed: one level (2/255 after normalising), on < 0.5%."""
    tr = pytest.importorskip("transformers")
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    level = 2 / 255
    for name, im in photos.items():
        ours = preprocess(im, preset("hf"))[0]
        pil = ViTImageProcessorPil()(images=im, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours, pil, atol=EXACT, rtol=0, err_msg=name)
        tv = tr.ViTImageProcessor()(images=im, return_tensors="pt")["pixel_values"][0].numpy()
        diff = np.abs(ours - tv)
        assert diff.max() <= level + EXACT, name
        assert (diff > EXACT).mean() < 0.005, name


def test_official_preset_is_tf_resize_to_minus_one_one(photos):
    """The official JAX eval pipeline: tf.image.resize(S x S) bilinear without antialiasing, then
    (x - 127.5) / 127.5. Reference through PyTorch's identical interpolation (see above):
    atol 5e-3 levels / 127.5 = 4e-5."""
    torch = pytest.importorskip("torch")
    a = np.asarray(photos["chelsea"])
    t = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(t, size=(384, 384), mode="bilinear", align_corners=False)
    ref = ((ref[0] - 127.5) / 127.5).numpy()
    np.testing.assert_allclose(preprocess(a, preset("official", 384))[0], ref, atol=4e-5, rtol=0)


# --- geometry ------------------------------------------------------------------------------------
def test_resized_size_rules():
    timm = preset("timm")                          # 224 at crop_pct 0.9: short side floor(248.9) = 248
    assert resized_size(300, 451, timm) == (248, int(248 * 451 / 300)) == (248, 372)
    assert resized_size(451, 300, timm) == (372, 248)
    assert resized_size(100, 100, timm) == (248, 248)
    assert resized_size(300, 451, preset("torchvision")) == (256, 384)   # 224 / 0.875 = 256 exactly
    assert resized_size(300, 451, preset("hf")) == (224, 224)           # squash
    # Non-square target: scale to cover (floor(160/0.9), floor(224/0.9)) = (177, 248), round()
    cfg = timm.replace(input_size=(160, 224))
    r = min(300 / 177, 451 / 248)
    assert resized_size(300, 451, cfg) == (round(300 / r), round(451 / r))
    assert math.floor(224 / 0.9) == 248


def test_center_crop_offsets_follow_torchvision():
    img = np.arange(7 * 9).reshape(7, 9, 1)
    out = center_crop(img, (4, 4))
    # top = int(round(3 / 2)) = 2 (round half to even), left = int(round(5 / 2)) = 2
    np.testing.assert_array_equal(out, img[2:6, 2:6])
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(img, (8, 4))


def test_preprocess_output_contract(photos):
    x = preprocess([photos["chelsea"], DATA / "coffee.png"], preset("deit", 64))
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    # The batch is the single images stacked.
    np.testing.assert_array_equal(x[1], preprocess(str(DATA / "coffee.png"), preset("deit", 64))[0])
    with pytest.raises(TypeError, match="PreprocessConfig"):
        preprocess(photos["chelsea"], {"input_size": 224})


def test_float_images_skip_quantisation(photos):
    """A float image in [0, 1] is resized without rounding to 256 levels: it equals Pillow's
    mode-"F" resize of each channel, cropped and normalised (tolerance as in the resize test,
    scaled by 1/std = 2)."""
    a = np.asarray(photos["chelsea"]).astype(np.float32) / 255
    cfg = preset("timm", 96)
    got = preprocess(a, cfg)[0]
    h, w = resized_size(*a.shape[:2], cfg)
    ref = np.stack([np.asarray(Image.fromarray(a[..., c], mode="F").resize((w, h), Image.BICUBIC))
                    for c in range(3)], axis=-1)
    ref = (center_crop(ref, (96, 96)) - 0.5) / 0.5
    np.testing.assert_allclose(got, ref.transpose(2, 0, 1), atol=5e-7, rtol=0)
    # ... and stays within a level or so of the uint8 path.
    assert np.abs(got - preprocess(photos["chelsea"], cfg)[0]).max() < 2 * (2 / 255)


# --- image readers ---------------------------------------------------------------------------------
def test_every_input_kind_gives_the_same_pixels(photos, tmp_path):
    im = photos["coffee"]
    a = np.asarray(im)
    ref = to_rgb(DATA / "coffee.png")
    assert ref.dtype == np.uint8 and ref.shape == (400, 600, 3)
    rgba = np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])
    for kind, value in [("str", str(DATA / "coffee.png")), ("PIL", im), ("array", a),
                        ("int64 array", a.astype(np.int64)), ("RGBA array", rgba),
                        ("RGBA PIL", im.convert("RGBA"))]:
        np.testing.assert_array_equal(to_rgb(value), ref, err_msg=kind)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "I;16", "1"])
def test_pil_modes_convert_like_pillow(photos, mode):
    im = photos["chelsea"].convert(mode) if mode != "I;16" else photos["chelsea"].convert("L").convert("I;16")
    np.testing.assert_array_equal(to_rgb(im), np.asarray(im.convert("RGB")))


def test_grey_arrays_become_three_equal_channels(photos):
    grey = np.asarray(photos["chelsea"].convert("L"))
    ref = np.asarray(photos["chelsea"].convert("L").convert("RGB"))
    np.testing.assert_array_equal(to_rgb(grey), ref)
    np.testing.assert_array_equal(to_rgb(grey[..., None]), ref)


def test_float_arrays():
    f = np.random.default_rng(0).random((5, 6, 3))
    out = to_rgb(f)
    assert out.dtype == np.float32 and np.allclose(out, f, atol=1e-7)
    with pytest.raises(ValueError, match=r"\[0, 1\].*astype\(np.uint8\)"):
        to_rgb(f * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\].*normalis"):
        to_rgb(f - 0.5)
    with pytest.raises(ValueError, match="NaN"):
        to_rgb(np.full((2, 2, 3), np.nan))


@pytest.mark.parametrize("value, error, match", [
    (np.zeros((3, 32, 32), np.uint8), ValueError, "channels first"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, "1, 3 or 4 channels"),
    (np.zeros((8,), np.uint8), ValueError, r"shape \(H, W, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    (np.zeros((8, 8, 3), bool), TypeError, "dtype bool"),
    (np.full((8, 8, 3), 300), ValueError, r"0\.\.255"),
    (np.full((8, 8, 3), "a"), TypeError, "dtype"),
    ([[1, 2], [3, 4]], TypeError, "nested lists"),
    (b"\x89PNG", TypeError, "raw bytes"),
    (42, TypeError, "from a int"),
    (object(), TypeError, "cannot read an image from a object"),
])
def test_bad_arrays_and_types(value, error, match):
    with pytest.raises(error, match=match):
        to_rgb_list(value)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        to_rgb(tmp_path / "missing.jpg")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match="not an image file"):
        to_rgb(tmp_path / "notes.png")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        to_rgb(tmp_path)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((DATA / "chelsea.png").read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.png"):
        to_rgb(truncated)
    with pytest.raises(ValueError, match="no images"):
        to_rgb_list([])
    with pytest.raises(ValueError, match="image 1: "):   # which one in a list
        to_rgb_list([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 7), np.uint8)])


def test_without_pillow_arrays_work_and_paths_say_what_to_install(monkeypatch, photos):
    a = np.asarray(photos["chelsea"])
    ref = preprocess(a, preset("timm", 64))
    for mod in [m for m in list(sys.modules) if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.setitem(sys.modules, mod, None)    # `import PIL` now raises ImportError
    np.testing.assert_array_equal(preprocess(a, preset("timm", 64)), ref)
    with pytest.raises(ImportError, match=r"pip install 'npvit\[image\]'"):
        to_rgb(DATA / "chelsea.png")
