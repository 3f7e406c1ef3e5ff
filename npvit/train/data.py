"""Datasets, seeded batching and the train/eval image transforms, all in NumPy.

A dataset is a list of labelled images: ``len(ds)``, ``ds.labels`` (N,) int64, ``ds.label_names``,
``ds.images(indices)`` -> RGB arrays as ``npvit.preprocess.images`` defines them ((h, w, 3) uint8,
or float32 in [0, 1]), ``ds.subset(indices)``.

    eval:   preprocess(images, cfg)  -- the model's own recipe (resize, center crop, normalise)
    train:  random resized crop (timm/torchvision RandomResizedCrop: area fraction ~ U(scale),
            log aspect ratio ~ U(log ratio), 10 tries then a center crop) -> resize to the model's
            size with the recipe's filter -> horizontal flip (p = hflip) -> optional inversion
            x -> 1 - x (p = invert) -> normalise.

Images that all share one size (in-memory arrays) are resized to the model's size once and kept
("base" images, float32 in [0, 1], squashed to the input size); crops are then taken from the
base with one batched matrix product per axis.  Image folders crop each full-resolution picture.
Randomness comes only from the generator passed in, so a run is reproducible from its seed.

Data-parallel runs: ``TrainTransform(..., part=slice)`` makes only a part of the batch but draws
the random numbers of the whole batch, so K ranks each making their part produce, together, the
batch one process makes.  Drawing a crop needs only the image's size, which ``image_sizes`` gives
without decoding the pixels (a file's header).
"""
import hashlib
import math
from pathlib import Path

import numpy as np

from ..preprocess.config import PreprocessConfig
from ..preprocess.images import import_pillow, list_image_files, read_image, to_rgb
from ..preprocess.resize import resize, resize_weights
from ..preprocess.transform import transform_one

BASE_CACHE_BYTES = 512 * 2 ** 20   # in-memory datasets whose base images fit are resized only once


class Dataset:
    labels = None
    label_names = None

    def __len__(self):
        return len(self.labels)

    @property
    def num_classes(self):
        return len(self.label_names)

    def images(self, indices):
        raise NotImplementedError

    def image_sizes(self, indices):
        """(height, width) of each image, without keeping the pixels."""
        return [img.shape[:2] for img in self.images(indices)]

    def subset(self, indices):
        raise NotImplementedError

    def fingerprint(self):
        """A digest of what the dataset holds, for checking that several processes have the same."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((type(self).__name__, len(self), self.label_names)).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        self._fingerprint_content(h)
        return h.hexdigest()

    def _fingerprint_content(self, h):
        pass


class ArrayDataset(Dataset):
    """Images held in memory: (N, H, W) grey or (N, H, W, 3) colour; uint8 0..255 or floats in [0, 1]."""

    def __init__(self, images, labels, label_names=None):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]                                       # (N, H, W, 1)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            hint = " (channels first? use images.transpose(0, 2, 3, 1))" if images.ndim == 4 and \
                images.shape[1] in (1, 3) else ""
            raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}{hint}")
        if images.dtype.kind == "f":
            if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
                raise ValueError("float images must hold finite values in [0, 1] "
                                 "(0..255 values? pass images.astype(np.uint8))")
            images = images.astype(np.float32, copy=False)
        elif images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")
        self._images = images
        self.labels = check_labels(labels, len(images), label_names)
        self.label_names = _names(label_names, self.labels)

    def images(self, indices):
        return [to_rgb(self._images[i]) for i in indices]

    def image_sizes(self, indices):
        return [self._images.shape[1:3]] * len(indices)

    def subset(self, indices):
        return ArrayDataset(self._images[indices], self.labels[indices], self.label_names)

    def _fingerprint_content(self, h):
        h.update(repr((self._images.shape, self._images.dtype.str)).encode())
        h.update(np.ascontiguousarray(self._images).data)

    @property
    def same_size(self):
        return True


class ImageFolderDataset(Dataset):
    """``root/<class name>/**/<image>``: classes are the sub-folders, sorted by name (as torchvision)."""

    def __init__(self, root, label_names=None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist (expected one sub-folder per class)")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValueError(f"{root} has no class sub-folders: put each class's images in "
                             f"{root}/<class name>/")
        if label_names is not None and list(label_names) != classes:
            raise ValueError(f"{root} has classes {classes}, expected {list(label_names)}")
        files, labels = [], []
        for k, name in enumerate(classes):
            found = list_image_files(root / name)
            if not found:
                raise ValueError(f"class folder {root / name} holds no images (.png, .jpg, ...): "
                                 "add images or remove the folder")
            files += found
            labels += [k] * len(found)
        self.root, self.files = root, files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names = tuple(classes)

    def images(self, indices):
        out = []
        for i in indices:
            try:
                out.append(read_image(self.files[i]))
            except (ValueError, OSError) as exc:
                raise ValueError(f"cannot read training image {self.files[i]}: {exc}") from None
        return out

    def image_sizes(self, indices):
        """From each file's header (Pillow opens lazily: no pixels are decoded)."""
        Image = import_pillow()
        sizes = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as im:
                    w, h = im.size
            except (ValueError, OSError) as exc:
                raise ValueError(f"cannot read training image {self.files[i]}: {exc}") from None
            sizes.append((h, w))
        return sizes

    def subset(self, indices):
        sub = object.__new__(ImageFolderDataset)
        sub.root, sub.label_names = self.root, self.label_names
        sub.files = [self.files[i] for i in indices]
        sub.labels = self.labels[indices]
        return sub

    def _fingerprint_content(self, h):
        h.update("\n".join(str(Path(f).relative_to(self.root)) for f in self.files).encode())

    @property
    def same_size(self):
        return False


def check_labels(labels, n, label_names=None):
    """(N,) int64 labels; out-of-range values are named with the fix."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"expected {n} labels (one per image), got shape {labels.shape}")
    if labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()} (at index {int(labels.argmin())})")
    if label_names is not None and n and labels.max() >= len(label_names):
        raise ValueError(f"label {labels.max()} (at index {int(labels.argmax())}) is out of range for "
                         f"{len(label_names)} classes {tuple(label_names)[:5]}...")
    return labels


def _names(label_names, labels):
    if label_names is not None:
        return tuple(str(n) for n in label_names)
    k = int(labels.max()) + 1 if len(labels) else 0
    return tuple(str(i) for i in range(k))


def split(dataset, fraction, seed=0):
    """(train, held_out) with ``fraction`` of the images held out, by a seeded permutation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_out = max(1, int(round(len(dataset) * fraction)))
    return dataset.subset(np.sort(order[n_out:])), dataset.subset(np.sort(order[:n_out]))


def epoch_order(n, seed, epoch, shuffle=True):
    """The sample order of one epoch: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, 0, epoch]).permutation(n) if shuffle else np.arange(n)


# --- transforms ------------------------------------------------------------------------------------
def normalise(x, cfg):
    """(B, H, W, 3) float32 in [0, 1] -> (B, 3, H, W) normalised with the recipe's mean/std."""
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))                     # (B, 3, H, W)


def eval_batch(dataset, indices, cfg):
    """The model's eval preprocessing of ``dataset``'s images ``indices`` -> (B, 3, H, W) float32."""
    return np.stack([transform_one(img, cfg) for img in dataset.images(indices)])


def crop_box(rng, H, W, scale, ratio):
    """(top, left, height, width) of a random resized crop, torchvision's algorithm."""
    area = H * W
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    # Fallback: the whole image, trimmed to the allowed aspect ratios, centred.
    in_ratio = W / H
    if in_ratio < ratio[0]:
        w, h = W, int(round(W / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = H, int(round(H * ratio[1]))
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


class TrainTransform:
    """Random resized crop + flip (+ inversion) + normalisation, from one generator."""

    def __init__(self, cfg, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, invert=0.0):
        if not isinstance(cfg, PreprocessConfig):
            raise TypeError(f"cfg must be a PreprocessConfig, got {type(cfg).__name__}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"crop aspect ratios must satisfy 0 < min <= max, got {ratio}")
        for name, p in (("hflip", hflip), ("invert", invert)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {p}")
        self.cfg, self.scale, self.ratio = cfg, tuple(scale), tuple(ratio)
        self.hflip, self.invert = float(hflip), float(invert)
        self._base, self._base_of = None, None

    def __call__(self, dataset, indices, rng, part=None):
        """Augmented, normalised (b, 3, H, W) float32 images of ``indices[part]`` (all by default).

        The draws are always the whole batch's -- every crop box in order, then the flips, then the
        inversions -- so the parts of a batch made separately equal the parts of the whole."""
        indices = np.asarray(indices)
        B = len(indices)
        keep = np.arange(B)[part if part is not None else slice(None)]
        if getattr(dataset, "same_size", False) and self._cacheable(dataset):
            base = self._base_images(dataset)
            H, W = base.shape[1:3]
            boxes = [crop_box(rng, H, W, self.scale, self.ratio) for _ in range(B)]
            x = self._crop_base(base[indices[keep]], [boxes[b] for b in keep])
        else:
            mine = dict(zip(keep.tolist(), dataset.images(indices[keep])))
            others = [b for b in range(B) if b not in mine]
            sizes = dict(zip(others, dataset.image_sizes(indices[others]))) if others else {}
            sizes.update((b, img.shape[:2]) for b, img in mine.items())
            boxes = [crop_box(rng, *sizes[b], self.scale, self.ratio) for b in range(B)]
            x = np.stack([self._crop_one(mine[b], boxes[b]) for b in keep])
        flip = (rng.random(B) < self.hflip)[keep]
        x[flip] = x[flip, :, ::-1]
        inv = (rng.random(B) < self.invert)[keep]
        x[inv] = 1.0 - x[inv]
        return normalise(x, self.cfg)

    def _cacheable(self, dataset):
        H, W = self.cfg.input_size
        return len(dataset) * H * W * 3 * 4 <= BASE_CACHE_BYTES

    def _base_images(self, dataset):
        """Every image squashed to the input size once, float32 in [0, 1], (N, H, W, 3)."""
        if self._base_of is not dataset:
            H, W = self.cfg.input_size
            self._base = np.stack([_to_unit(resize(img, (H, W), self.cfg.interpolation, self.cfg.antialias)
                                            if img.shape[:2] != (H, W) else img, img.dtype)
                                   for img in dataset.images(range(len(dataset)))])
            self._base_of = dataset
        return self._base

    def _crop_base(self, base, boxes):
        """Crops ``boxes`` of same-size images back to that size: x_b = Wy_b @ img_b @ Wx_b^T."""
        B, H, W, _ = base.shape
        wy = np.zeros((B, H, H))
        wx = np.zeros((B, W, W))
        for b, (top, left, h, w) in enumerate(boxes):
            wy[b, :, top:top + h] = resize_weights(h, H, self.cfg.interpolation, self.cfg.antialias)
            wx[b, :, left:left + w] = resize_weights(w, W, self.cfg.interpolation, self.cfg.antialias)
        out = np.einsum("bij,bjkc,blk->bilc", wy, base, wx, optimize=True)   # (B, H, W, 3)
        return out.astype(np.float32)

    def _crop_one(self, img, box):
        """One full-size picture: crop ``box``, resize to the input size, to float32 in [0, 1]."""
        top, left, h, w = box
        crop = img[top:top + h, left:left + w]
        return _to_unit(resize(crop, self.cfg.input_size, self.cfg.interpolation, self.cfg.antialias),
                        img.dtype)


def _to_unit(x, source_dtype):
    x = x.astype(np.float32)
    return x / np.float32(255) if source_dtype == np.uint8 else x
