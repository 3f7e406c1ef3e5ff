"""The README's "Seeing inside" figures: the overlay panel and the sanity numbers, from the digits model.

    python tools/explain_figures.py                  # writes docs/explain_digits.png, prints the numbers

Panel: four held-out digits (scikit-learn's 8x8 digits, the recipe's test split), each drawn at
128x128 (nearest neighbour), then npvit.explain.overlay (what ``npvit explain`` writes) of rollout,
gradient x attention and saliency for the class the model predicts.

Numbers (Adebayo et al. 2018, model randomisation), on all 359 held-out digits, the class being the
true label: the mean Spearman correlation between a digit's map and its map under re-initialised
weights (npvit's init, seeds 1-8; and the head alone re-initialised), and the share of each map's
mass on stroke pixels (input intensity >= 0.5 on the model's 16x16 input), the map less its minimum
(what an overlay shows); uniform maps would put the stroke area's share there.  The same
computation is the test tests/test_explain.py::test_digit_maps_change_when_the_weights_are_reinitialised_and_sit_on_the_strokes.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import npvit  # noqa: E402
from npvit import explain  # noqa: E402
from npvit.preprocess.transform import transform_one  # noqa: E402
from npvit.train.datasets import load_digits_split  # noqa: E402

SIZE, GAP = 128, 6
COLUMNS = ("picture", "rollout", "gradient x attn", "saliency")


def maps(model, x, y):
    return {"rollout": explain.rollout(model, x), "gradient": explain.gradient_attention(model, x, y),
            "saliency": explain.saliency_map(explain.input_gradients(model, x, y))}


def spearman(a, b):
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(u.ravel(), v.ravel())[0] for u, v in zip(a, b)]))


def numbers(model, x, y):
    trained = maps(model, x, y)
    corr = {k: [] for k in trained}
    for seed in range(1, 9):
        for k, v in maps(npvit.VisionTransformer(model.config, seed=seed), x, y).items():
            corr[k].append(spearman(trained[k], v))
    head_only = npvit.VisionTransformer(model.config, seed=0)
    head_only.load_state_dict({**model.state_dict(), **{n: a for n, a in head_only.state_dict().items()
                                                       if n.startswith("head")}})
    head = {k: spearman(trained[k], v) for k, v in maps(head_only, x, y).items()}
    stroke = x.mean(axis=1) * 0.5 + 0.5 >= 0.5
    print(f"stroke pixels: {stroke.mean():.3f} of the input")
    print(f"{'map':<10}{'corr. re-init (mean, seeds 1-8 range)':>40}{'head re-init':>14}{'on strokes':>12}")
    for k, v in trained.items():
        m = np.kron(v, np.ones((1, 4, 4))) if v.shape[1:] == (4, 4) else v
        m = m.astype(np.float64) - m.min(axis=(1, 2), keepdims=True)
        mass = ((m * stroke).sum(axis=(1, 2)) / m.sum(axis=(1, 2))).mean()
        print(f"{k:<10}{f'{np.mean(corr[k]):+.2f} ({min(corr[k]):+.2f} to {max(corr[k]):+.2f})':>40}"
              f"{head[k]:>14.2f}{mass:>12.3f}")


def panel(model, pictures, x, out):
    from PIL import Image, ImageDraw

    classes = model.forward(x).argmax(axis=1)
    found = maps(model, x, classes)
    rows = len(pictures)
    width = len(COLUMNS) * SIZE + (len(COLUMNS) + 1) * GAP
    height = 18 + rows * SIZE + (rows + 1) * GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(COLUMNS):
        draw.text((GAP + j * (SIZE + GAP) + 4, 4), name, fill=(0, 0, 0))
    for i, pic in enumerate(pictures):
        big = np.kron(pic, np.ones((SIZE // pic.shape[0], SIZE // pic.shape[1], 1), pic.dtype))
        tiles = [np.clip(np.rint(big * 255), 0, 255).astype(np.uint8)]
        tiles += [explain.overlay(big, found[k][i], alpha=0.6) for k in ("rollout", "gradient", "saliency")]
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (GAP + j * (SIZE + GAP), 18 + GAP + i * (SIZE + GAP)))
    canvas.save(out, optimize=True)
    print(f"wrote {out}: predicted {[int(c) for c in classes]}")


def main():
    _, test = load_digits_split()
    model = npvit.load("digits")
    rgb = test.images(range(len(test.labels)))
    x = np.stack([transform_one(im, model.preprocess) for im in rgb])
    numbers(model, x, test.labels)
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in (0, 3, 4, 7)]
    out = ROOT / "docs" / "explain_digits.png"
    out.parent.mkdir(exist_ok=True)
    panel(model, [rgb[i] for i in picks], x[picks], out)


if __name__ == "__main__":
    main()
