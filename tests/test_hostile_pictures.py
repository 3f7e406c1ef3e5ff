"""Bad and unusual pictures: a decompression bomb is an unreadable file like any other, 16-bit and
floating-point pictures are scaled rather than clipped to white, and a folder is walked as the
command line walks it."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

import npvit

Image = pytest.importorskip("PIL.Image")
DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def digits():
    return npvit.load("digits")


def _bomb_png(path, side=60_000):
    """A 200-byte PNG whose header claims side x side grey pixels (3.6 gigapixels at 60,000)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_value_error_naming_the_file(tmp_path, digits):
    bomb = _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(Image.DecompressionBombError):   # control: Pillow does see a bomb
        Image.open(bomb)
    with pytest.raises(ValueError, match=f"{bomb}: refused as a decompression bomb"):
        digits.predict(str(bomb))
    with pytest.raises(ValueError, match=r"image 1: .*bomb\.png: refused as a decompression bomb"):
        digits.predict([os.path.join(DATA, "digit_7.png"), str(bomb)])


def test_cli_skips_a_bomb_in_a_folder_and_predicts_the_rest(tmp_path, capsys):
    from npvit.cli import main

    folder = tmp_path / "pics"
    folder.mkdir()
    _bomb_png(folder / "a_bomb.png")
    for name in ("digit_3.png", "digit_7.png"):
        (folder / name).write_bytes(open(os.path.join(DATA, name), "rb").read())
    assert main(["predict", "digits", str(folder), "--json"]) == 1
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [os.path.basename(r["path"]) for r in records] == ["a_bomb.png", "digit_3.png", "digit_7.png"]
    assert "decompression bomb" in records[0]["error"] and str(folder / "a_bomb.png") in records[0]["error"]
    assert [r["predictions"][0]["label"] for r in records[1:]] == ["3", "7"]


def _digit(name="digit_7.png"):
    return np.asarray(Image.open(os.path.join(DATA, name)).convert("L"))            # (8, 8) uint8


# The 8-bit picture is resized in uint8 with Pillow's rounding after each pass; the wide one in
# float32 without it, so inputs differ by at most half a grey level (0.5 / 255 of the range) per
# pixel.  Through the digits model that moved probabilities by 5e-5 (digit 7) and 2e-4 (digit 3);
# 2e-3 leaves ten times that and is still a hundredth of what clipping to white does (the control: 0.23).
TOL = 2e-3


@pytest.mark.parametrize("mode", ["I;16 png", "I;16 tiff", "I", "F 0..1 tiff", "F 0..255", "F 0..65535"])
def test_wide_pictures_predict_like_their_8bit_rendering(tmp_path, digits, mode):
    g8 = _digit()
    expected = digits.predict(Image.fromarray(g8), topk=10)
    if mode.startswith("I;16"):
        img = Image.fromarray((g8.astype(np.uint16) * 257))
        assert img.mode == "I;16"
        path = tmp_path / ("x.png" if "png" in mode else "x.tif")
        img.save(path)
        picture = str(path)
    elif mode == "I":
        picture = Image.fromarray(g8.astype(np.int32) * 257)
        assert picture.mode == "I"
        picture.info.clear()
    elif mode == "F 0..1 tiff":
        Image.fromarray(g8.astype(np.float32) / 255).save(tmp_path / "x.tif")
        picture = str(tmp_path / "x.tif")
    else:
        scale = 1 if mode == "F 0..255" else 257
        picture = Image.fromarray(g8.astype(np.float32) * scale)
    got = digits.predict(picture, topk=10)
    assert [label for label, _ in got][:1] == [label for label, _ in expected][:1] == ["7"]
    p_got, p_exp = dict(got), dict(expected)
    assert max(abs(p_got[k] - p_exp[k]) for k in p_exp) < TOL, (got, expected)


def test_control_clipping_a_16bit_picture_to_8_bits_changes_the_answer(tmp_path, digits):
    g8 = _digit()
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "x.png")
    clipped = np.asarray(Image.open(tmp_path / "x.png").convert("RGB"))       # what convert("RGB") does
    assert ((clipped[..., 0] == 255) == (g8 > 0)).all()                        # every grey became white
    p_clip, p_exp = dict(digits.predict(clipped, topk=10)), dict(digits.predict(Image.fromarray(g8), topk=10))
    assert max(abs(p_clip[k] - p_exp[k]) for k in p_exp) > 50 * TOL           # 0.23 for this digit


def test_16bit_detail_below_8_bits_is_kept(tmp_path):
    """Values between two 8-bit levels stay distinct (a 16-bit picture is not rounded to 8 bits)."""
    from npvit.preprocess.images import to_rgb

    g16 = np.array([[0, 1, 257, 65535]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "x.png")
    rgb = to_rgb(str(tmp_path / "x.png"))
    assert rgb.dtype == np.float32 and rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], (g16[0] / 65535).astype(np.float32))
    with pytest.raises(ValueError, match=r"mode I image with values -5\.\.300000"):
        to_rgb(Image.fromarray(np.array([[-5, 300_000]], np.int32)))


def test_predict_on_a_folder_walks_it_like_the_cli(tmp_path, digits):
    from npvit.cli.predict import collect_images

    (tmp_path / "sub").mkdir()
    for dst, src in (("b.png", "digit_7.png"), ("sub/a.PNG", "digit_3.png"), ("a.png", "digit_3.png")):
        (tmp_path / dst).write_bytes(open(os.path.join(DATA, src), "rb").read())
    (tmp_path / "notes.txt").write_text("not a picture")
    got = digits.predict(str(tmp_path), topk=2)
    assert list(got) == [str(p) for p in collect_images([str(tmp_path)])]
    assert list(got) == [str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "sub" / "a.PNG")]
    for path, pairs in got.items():   # one batch vs one by one: float32 summation order only
        alone = digits.predict(path, topk=2)
        assert [k for k, _ in pairs] == [k for k, _ in alone]
        np.testing.assert_allclose([p for _, p in pairs], [p for _, p in alone], rtol=1e-6)
    assert [pairs[0][0] for pairs in got.values()] == ["3", "7", "3"]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="broken.png"):
        digits.predict(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        digits.predict(tmp_path / "empty")
