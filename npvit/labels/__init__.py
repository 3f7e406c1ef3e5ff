"""Class names for the heads checkpoints come with: ImageNet-1k (1000), ImageNet-21k (21843, Google's
ViT heads) and ImageNet-22k (21841, Swin's heads).

Each ``<set>.txt.gz`` holds one ``synset<TAB>names`` line per class, in the class-index order of
the checkpoints: ``imagenet1k`` follows ``imagenet_synsets.txt`` (index 281 is
``n02123045  tabby, tabby cat``), ``imagenet21k`` follows ``imagenet21k_goog_synsets.txt``, the
order of Google's 21843-class heads, ``imagenet22k`` follows ``imagenet22k_synsets.txt`` (the
fall11 order of Swin's 21841-class heads). Names are WordNet lemmas. Both come from the files in timm's
``timm/data/_info/`` (Apache-2.0, see NOTICE). They are read once, on first use.
"""
import functools
import gzip
from importlib import resources

SETS = {"imagenet1k": 1000, "imagenet21k": 21843, "imagenet22k": 21841}


@functools.lru_cache(maxsize=None)
def _read(name):
    if name not in SETS:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(SETS)}")
    with resources.files(__name__).joinpath(f"{name}.txt.gz").open("rb") as raw:
        lines = gzip.decompress(raw.read()).decode("utf-8").splitlines()
    pairs = tuple(tuple(line.split("\t", 1)) for line in lines)
    if len(pairs) != SETS[name]:  # a damaged install, not a user error
        raise RuntimeError(f"label file {name}.txt.gz holds {len(pairs)} classes, expected {SETS[name]}")
    return pairs


def imagenet_names(name="imagenet1k"):
    """The class names of a label set, a tuple indexed by class (e.g. ``[281] == 'tabby, tabby cat'``)."""
    return tuple(n for _, n in _read(name))


def imagenet_synsets(name="imagenet1k"):
    """The WordNet ids of a label set (``'n02123045'``), in class order."""
    return tuple(s for s, _ in _read(name))


def label_names_for(num_classes, config=None):
    """Names for a head of ``num_classes``: ``config.label_names`` when the model has its own,
    ImageNet-1k for 1000 classes, ImageNet-21k for 21843, ImageNet-22k for 21841, else the class
    indices as strings."""
    own = getattr(config, "label_names", None) if config is not None else None
    if own is not None:
        if len(own) != num_classes:
            raise ValueError(f"{len(own)} label names for a {num_classes}-class head")
        return tuple(own)
    for name, n in SETS.items():
        if num_classes == n:
            return imagenet_names(name)
    return tuple(str(i) for i in range(num_classes))


__all__ = ["imagenet_names", "imagenet_synsets", "label_names_for", "SETS"]
