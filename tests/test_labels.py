"""Class names: the vendored ImageNet-1k/21k lists equal timm's, are chosen by head size, ship as
package data and are read only when first asked for."""
import subprocess
import sys
from pathlib import Path

import pytest

from npvit import ViTConfig
from npvit.labels import SETS, imagenet_names, imagenet_synsets, label_names_for

ROOT = Path(__file__).resolve().parent.parent


def test_imagenet1k_names():
    names = imagenet_names("imagenet1k")
    assert len(names) == 1000 and len(set(imagenet_synsets("imagenet1k"))) == 1000
    assert names[0] == "tench, Tinca tinca"
    assert names[281] == "tabby, tabby cat" and imagenet_synsets()[281] == "n02123045"
    assert names[967] == "espresso"


@pytest.mark.parametrize("ours, theirs", [("imagenet1k", "imagenet-1k"),
                                          ("imagenet21k", "imagenet-21k-goog"),
                                          ("imagenet22k", "imagenet-22k")])
def test_names_equal_timms(ours, theirs):
    """Same names and synsets, in the same order, as timm's ImageNetInfo (the source)."""
    data = pytest.importorskip("timm.data")
    info = data.ImageNetInfo(theirs)
    assert imagenet_names(ours) == tuple(info.label_descriptions())
    assert imagenet_synsets(ours) == tuple(info.label_names())
    assert len(imagenet_names(ours)) == SETS[ours]


def test_label_names_for_head_sizes():
    assert label_names_for(1000) == imagenet_names("imagenet1k")
    assert label_names_for(21843) == imagenet_names("imagenet21k")
    assert label_names_for(21841) == imagenet_names("imagenet22k")
    assert label_names_for(3) == ("0", "1", "2")
    cfg = ViTConfig(num_classes=2, depth=1, label_names=("cat", "dog"))
    assert label_names_for(2, cfg) == ("cat", "dog")
    assert label_names_for(1000, ViTConfig(depth=1)) == imagenet_names()   # config without names
    with pytest.raises(ValueError, match="3 label names for a 2-class head"):
        label_names_for(2, ViTConfig(num_classes=3, depth=1, label_names=("a", "b", "c")))
    with pytest.raises(ValueError, match="unknown label set"):
        imagenet_names("imagenet33k")


def test_label_files_are_package_data():
    """pyproject ships the .gz files and NOTICE with the npvit.labels package."""
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["npvit.labels"]
    folder = ROOT / "npvit" / "labels"
    for name in SETS:
        assert any((folder / f"{name}.txt.gz").match(p) for p in patterns)
    assert "NOTICE" in patterns and "Apache" in (folder / "NOTICE").read_text()


def test_labels_are_read_lazily():
    """Importing npvit decompresses no label file; the first lookup does, once."""
    code = ("import npvit, npvit.labels as L; a = L._read.cache_info().currsize; "
            "L.imagenet_names(); L.imagenet_names(); i = L._read.cache_info(); "
            "print(a, i.currsize, i.misses)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    assert out == ["0", "1", "1"]
