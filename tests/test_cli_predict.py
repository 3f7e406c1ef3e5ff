"""``npvit predict MODEL IMAGE...``: files and folders, text and JSON, batching, progress bar,
and every failure as one clear line (exit 2), or a skipped file (exit 1)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvit
from npvit.cli import main
from npvit.cli.predict import Progress

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with random weights and a 5-class named head, saved as npvit's .npz."""
    m = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=5,
                           label_names=("ant", "bee", "cat", "dog", "eel"))
    rng = np.random.default_rng(1)
    m.load_state_dict({k: rng.standard_normal(v.shape) * (1.0 if k.startswith("head") else 0.2)
                       for k, v in m.state_dict().items()})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    npvit.save(m, path)
    return path, npvit.load(path)


@pytest.fixture
def folder(tmp_path):
    """photos/ with a nested folder and a file that is not an image (ignored by its suffix)."""
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    shutil.copy(DATA / "coffee.png", root / "b" / "coffee.png")
    shutil.copy(DATA / "chelsea.png", root / "a_cat.PNG")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def run(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


LINE = re.compile(r"^(?P<path>.+): (?P<preds>(\w+ \(\d\.\d{4}\)(, )?)+)$")


def parse_text(out):
    rows = {}
    for line in out.strip().splitlines():
        m = LINE.match(line)
        assert m, f"unexpected output line {line!r}"
        rows[m["path"]] = [(lab, float(p)) for lab, p in re.findall(r"(\w+) \((\d\.\d{4})\)", m["preds"])]
    return rows


def test_text_output_matches_model_predict(capsys, checkpoint):
    path, model = checkpoint
    code, out, err = run(capsys, path, DATA / "chelsea.png", DATA / "coffee.png", "--topk", "3")
    assert code == 0 and err == ""                      # no progress bar when stderr is no TTY
    rows = parse_text(out)
    assert list(rows) == [str(DATA / "chelsea.png"), str(DATA / "coffee.png")]
    for img, got in rows.items():
        want = model.predict(img, topk=3)
        assert [label for label, _ in got] == [label for label, _ in want]
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=5e-5)  # 4 decimals


def test_folders_are_searched_recursively_and_sorted(capsys, checkpoint, folder):
    path, _ = checkpoint
    code, out, _ = run(capsys, path, folder, "--topk", "1")
    assert code == 0
    assert list(parse_text(out)) == [str(folder / "a_cat.PNG"), str(folder / "b" / "coffee.png")]


def test_json_and_batch_size(capsys, checkpoint, folder):
    path, model = checkpoint
    code, out, _ = run(capsys, path, folder, DATA / "chelsea.png", "--json", "--topk", "5",
                       "--batch-size", "2")
    assert code == 0
    records = json.loads(out)
    assert [r["path"] for r in records] == [str(folder / "a_cat.PNG"), str(folder / "b" / "coffee.png"),
                                            str(DATA / "chelsea.png")]
    for r in records:
        want = model.predict(r["path"], topk=5)
        assert [p["label"] for p in r["predictions"]] == [label for label, _ in want]
        # batches of 2 vs 1: float32 rounding only
        np.testing.assert_allclose([p["probability"] for p in r["predictions"]], [p for _, p in want],
                                   rtol=1e-5)
        assert abs(sum(p["probability"] for p in r["predictions"]) - 1) < 1e-9   # all 5 classes


def test_unreadable_file_is_reported_and_skipped(capsys, checkpoint, folder):
    path, _ = checkpoint
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = run(capsys, path, folder, "--batch-size", "8")
    assert code == 1
    assert len(parse_text(out)) == 2                    # the good ones still answered
    assert "broken.jpg" in err and "not an image file" in err
    code, out, _ = run(capsys, path, folder, "--json")
    errors = [r for r in json.loads(out) if "error" in r]
    assert code == 1 and len(errors) == 1 and errors[0]["path"].endswith("broken.jpg")


def test_progress_bar_on_request(capsys, checkpoint, folder):
    path, _ = checkpoint
    code, out, err = run(capsys, path, folder, "--progress", "--batch-size", "1")
    assert code == 0 and "2/2 images" in err and "1/2 images" in err
    assert "images" not in out                           # the bar never touches stdout


def test_progress_bar_drawing():
    import io

    buf = io.StringIO()
    bar = Progress(4, stream=buf)
    bar.update(2)
    bar.clear()
    bar.update(2)
    bar.close()
    text = buf.getvalue()
    assert "[" + "#" * 15 + "-" * 15 + "] 2/4 images" in text and "[" + "#" * 30 + "] 4/4" in text
    assert text.endswith("\n")
    silent = io.StringIO()
    Progress(4, enabled=False, stream=silent).update(4)
    assert silent.getvalue() == ""


@pytest.mark.parametrize("argv, message", [
    (["{ckpt}", "{missing}"], "image file or folder not found"),
    (["{ckpt}", "{empty}"], "holds no image files"),
    (["{ckpt}", "{img}", "--topk", "0"], "--topk must be at least 1"),
    (["{ckpt}", "{img}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["{missing}", "{img}"], "no such checkpoint"),
    (["{ckpt}", "{img}", "--labels", "{labels3}"], "has 3 names but the model has 5 classes"),
])
def test_errors_are_one_clear_line(capsys, checkpoint, tmp_path, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "labels3.txt").write_text("a\nb\nc\n")
    subs = dict(ckpt=checkpoint[0], missing=tmp_path / "missing.png", empty=tmp_path / "empty",
                img=DATA / "chelsea.png", labels3=tmp_path / "labels3.txt")
    code, out, err = run(capsys, *[a.format(**subs) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("npvit predict: error: ") and message in err and err.count("\n") == 1


def test_labels_file_and_preprocess_override(capsys, checkpoint, tmp_path):
    path, model = checkpoint
    (tmp_path / "names.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    code, out, _ = run(capsys, path, DATA / "coffee.png", "--labels", tmp_path / "names.txt",
                       "--preprocess", "hf", "--topk", "5")
    assert code == 0
    got = parse_text(out)[str(DATA / "coffee.png")]
    want = model.predict(str(DATA / "coffee.png"), topk=5, preprocess="hf",
                         labels=["one", "two", "three", "four", "five"])
    assert [label for label, _ in got] == [label for label, _ in want]


def test_without_pillow_the_message_names_the_extra(capsys, checkpoint, monkeypatch):
    for mod in [m for m in list(sys.modules) if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    code, _, err = run(capsys, checkpoint[0], DATA / "chelsea.png")
    assert code == 2 and "pip install 'npvit[image]'" in err


def test_console_script_and_module_entry_point(checkpoint):
    """pyproject installs `npvit` -> npvit.cli:main; `python -m npvit predict` runs end to end."""
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["npvit"] == "npvit.cli:main"
    proc = subprocess.run([sys.executable, "-m", "npvit", "predict", str(checkpoint[0]),
                           str(DATA / "chelsea.png"), "--topk", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{DATA / 'chelsea.png'}: ") and proc.stdout.count("(") == 2
