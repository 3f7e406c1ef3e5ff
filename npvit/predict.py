"""``predict(model, images)``: pictures in, the top-k ``(label, probability)`` pairs out.

    x      = preprocess(batch, model.preprocess)        (B, 3, H, W) float32, the checkpoint's recipe
    logits = model.forward(x)                           (B, K) eval mode; a distilled model returns
                                                        the mean of its two heads
    p      = softmax(logits), in float64                probabilities summing to 1 per image
    top-k  = the k largest p, descending (ties: lower class index first)

As Hugging Face's image-classification pipeline does, one image gives one list of pairs and a list
of images gives a list of such lists; a folder gives {file: pairs} for the image files in it (the
walk ``npvit predict`` does); ``topk`` larger than the number of classes gives them all.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .labels import label_names_for
from .model.base import Model
from .preprocess.config import PRESETS, PreprocessConfig, preset
from .preprocess.images import IMAGE_SUFFIXES, is_batch, list_image_files, to_rgb
from .preprocess.transform import transform_one


Prediction = List[Tuple[str, float]]


def predict(model: Model, images: Any, topk: int = 5, labels: Optional[Sequence[str]] = None,
            batch_size: int = 32, preprocess: Union[PreprocessConfig, str, None] = None,
            ) -> Union[Prediction, List[Prediction], Dict[str, Prediction]]:
    """Top-``topk`` ``(label, probability)`` pairs per image, most probable first.

    ``images``: a path, a PIL image, an (H, W, 3) uint8 array, a float array in [0, 1], or a list
    of these (see ``npvit.preprocess.images``); one image gives one list of pairs, a list gives a
    list of them.  A folder gives ``{file path: pairs}`` for its image files, found as
    ``npvit predict`` finds them (recursively, by suffix, sorted by path); a file Pillow cannot
    read raises a ValueError naming it.  ``labels``: class names to use instead of the model's
    (``model.config.label_names``, else ImageNet-1k/21k by head size, else indices).
    ``preprocess``: a PreprocessConfig or a preset name overriding ``model.preprocess``; a model
    without one uses timm's recipe at its image size. Images are read, transformed and run
    ``batch_size`` at a time.
    """
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        files = list_image_files(images)
        if not files:
            raise ValueError(f"folder {images} holds no image files (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)}, recursively)")
        results = predict(model, [str(f) for f in files], topk, labels, batch_size, preprocess)
        return dict(zip((str(f) for f in files), results))
    k = _check_topk(topk)
    names = _label_names(model, labels)
    probs = probabilities(model, images, batch_size=batch_size, preprocess=preprocess)   # (B, K)
    results = [_top(p, k, names) for p in probs]
    return results if is_batch(images) else results[0]


def probabilities(model, images, batch_size=32, preprocess=None):
    """Softmax of the logits in float64, (B, num_classes), for one image or a batch of them."""
    if not getattr(model.config, "num_classes", 0):
        raise ValueError("this model has no classification head (num_classes=0): it returns "
                         "features; use model.forward(x) or load it with num_classes set")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    cfg = resolve_preprocess(model, preprocess)
    items = list(images) if is_batch(images) else [images]
    if not items:
        raise ValueError("no images given: pass a path, a PIL image, an array, or a list of them")
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        rgb = _read_chunk(chunk, start, len(items))
        x = np.stack([transform_one(img, cfg) for img in rgb])               # (b, 3, H, W)
        logits = model.forward(model.backend.from_numpy(x, dtype=model.dtype))
        out.append(softmax64(model.backend.to_numpy(logits)))                # (b, K)
    return np.concatenate(out)


def softmax64(logits):
    """Row softmax in float64: exp(z - max z) / sum, stable for any finite logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def resolve_preprocess(model, choice=None):
    """The PreprocessConfig predict uses: ``choice``, else the model's, else the recipe timm gives
    the architecture (``model.default_preprocess``) at img_size."""
    img_size = tuple(model.config.img_size)
    if choice is None:
        choice = getattr(model, "preprocess", None)
        if choice is None:
            return preset(getattr(model, "default_preprocess", "timm"), img_size)
    if isinstance(choice, str):
        if choice not in PRESETS:
            raise ValueError(f"unknown preprocessing preset {choice!r}; known: {', '.join(PRESETS)}")
        return preset(choice, img_size)
    if not isinstance(choice, PreprocessConfig):
        raise TypeError(f"preprocess must be a PreprocessConfig or a preset name "
                        f"({', '.join(PRESETS)}), got {type(choice).__name__}")
    if tuple(choice.input_size) != img_size:
        raise ValueError(f"preprocessing makes {choice.input_size[0]}x{choice.input_size[1]} images "
                         f"but the model takes {img_size[0]}x{img_size[1]}: use "
                         f"cfg.replace(input_size={img_size}), or load the model with "
                         f"img_size={tuple(choice.input_size)}")
    return choice


def _read_chunk(chunk, start, total):
    """RGB arrays for one batch; an error names the image's index in the whole input."""
    rgb = []
    for i, item in enumerate(chunk, start):
        try:
            rgb.append(to_rgb(item))
        except (TypeError, ValueError) as exc:
            if total == 1:
                raise
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"image {i}: {exc}") from exc
    return rgb


def _check_topk(topk):
    if not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return int(topk)


def _label_names(model, labels):
    num_classes = model.config.num_classes
    if labels is None:
        return label_names_for(num_classes, model.config)
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence of {num_classes} class names, "
                        f"got {type(labels).__name__}")
    if len(labels) != num_classes:
        raise ValueError(f"got {len(labels)} labels for a {num_classes}-class head")
    return tuple(str(n) for n in labels)


def _top(p, k, names):
    order = np.argsort(-p, kind="stable")[:k]                                # descending
    return [(names[i], float(p[i])) for i in order]
