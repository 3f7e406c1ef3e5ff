"""Real learning: a small ViT learns scikit-learn's digits, and the shipped digits model works.

These tests can fail: they train from random weights and check test-set accuracy on held-out
images, and they check the embedded model on the digits test split and on an image file.
"""
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

import npvit  # noqa: E402
from npvit.model import ViTConfig, VisionTransformer  # noqa: E402
from npvit.train import evaluate, train  # noqa: E402
from npvit.train.datasets import digits_arrays, load_digits_split  # noqa: E402
from npvit.train.recipes import RECIPES  # noqa: E402

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_a_small_vit_learns_digits_from_scratch(capsys):
    """8x8 digits, 2x2 patches (16 tokens), width 32, 2 blocks: > 90% on the 359 held-out digits.

    Chance is 10%.  The fixed compute (12 epochs of 1438 images, batch 16, no augmentation, which
    learns fastest at this length) took 15-23 s on 2 busy cores and ended at 94.2-94.7% (seeds 0, 1).
    """
    recipe = RECIPES["digits"]
    model = VisionTransformer(ViTConfig(**dict(recipe.model, img_size=8, patch_size=2, depth=2)))
    model.preprocess = recipe.preprocess.replace(input_size=(8, 8))
    tr, te = load_digits_split()
    t0 = time.perf_counter()
    hist = train(model, tr, te, recipe.train, epochs=12, batch_size=16, warmup_epochs=1, augment=False,
                 progress=False, blas_threads=1)
    took = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n  digits smoke: top-1 per epoch {[round(100 * r['eval_top1'], 1) for r in hist]} in {took:.1f} s")
    assert hist[0]["eval_top1"] < 0.6            # it starts near chance ...
    assert hist[-1]["eval_top1"] > 0.90          # ... and learns
    assert hist[-1]["eval_loss"] < hist[0]["eval_loss"] / 3


def test_embedded_digits_model_scores_97_percent():
    model = npvit.load("digits")
    assert model.config.label_names == tuple("0123456789") and model.config.num_classes == 10
    assert model.preprocess is not None and model.preprocess.input_size == (16, 16)
    _, te = load_digits_split()
    ev = evaluate(model, te)
    assert ev["top1"] >= 0.97, ev


def test_embedded_digits_model_reads_an_image_file():
    """tests/data/digit_*.png: 8x8 test-split digits saved as 8-bit greyscale PNGs (v * 255 / 16)."""
    pytest.importorskip("PIL")
    from PIL import Image
    model = npvit.load("digits")
    files = sorted(DATA.glob("digit_*.png"))
    assert len(files) >= 2
    for f in files:
        truth = f.stem.split("_")[1]
        assert Image.open(f).size == (8, 8)
        label, prob = model.predict(str(f), topk=1)[0]
        assert label == truth and prob > 0.5, (f.name, label, prob)


def test_example_pngs_are_test_split_digits():
    """The shipped PNGs really are held-out digits (not training images), pixel for pixel."""
    pytest.importorskip("PIL")
    from PIL import Image
    images, labels = digits_arrays()
    _, te = load_digits_split()
    held = {tuple(np.round(im[..., 0] * 255).astype(np.uint8).ravel()) for im in te.images(range(len(te)))}
    for f in sorted(DATA.glob("digit_*.png")):
        px = np.asarray(Image.open(f).convert("L"))
        assert tuple(px.ravel()) in held, f.name


def test_predict_command_on_the_embedded_model(capsys):
    pytest.importorskip("PIL")
    from npvit.cli import main
    f = sorted(DATA.glob("digit_*.png"))[0]
    assert main(["predict", "digits", str(f), "--topk", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(")") and f"{f}: {f.stem.split('_')[1]} (" in out


def write_example_pngs(folder=DATA, digits=(3, 7)):
    """Regenerate tests/data/digit_<d>.png: the first held-out digit of each class, 8x8 greyscale."""
    from PIL import Image
    _, te = load_digits_split()
    for d in digits:
        i = int(np.flatnonzero(te.labels == d)[0])
        px = np.round(te.images([i])[0][..., 0] * 255).astype(np.uint8)      # white digit on black
        Image.fromarray(px, mode="L").save(folder / f"digit_{d}.png")


if __name__ == "__main__":  # python tests/test_train_learning.py  (rewrites the example PNGs)
    write_example_pngs()
