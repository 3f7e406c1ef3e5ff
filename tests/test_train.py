"""The training loop: resume bit for bit, accumulation, loss scaling, fine-tuning, data, bad input.

Everything runs on a tiny ViT (8x8 images, one or two blocks) so the file takes seconds; the
real-learning checks are in test_train_learning.py.
"""
import json
import math
import os

import numpy as np
import pytest

import npvit
from npvit import optim
from npvit.model import ViTConfig, VisionTransformer
from npvit.preprocess.config import PreprocessConfig
from npvit.train import (ArrayDataset, ImageFolderDataset, NonFiniteLossError, TrainConfig, TrainTransform,
                         evaluate, new_head, train, trainable_names)
from npvit.train.checkpoint import read_checkpoint
from npvit.train.data import crop_box, split

PRE = PreprocessConfig(input_size=(8, 8), interpolation="bilinear", crop_pct=1.0, crop_mode="squash")
TIMING = ("epoch_s", "img_per_s", "elapsed_s")


def tiny(dtype="float32", seed=0, **kw):
    cfg = dict(img_size=8, patch_size=4, in_c=3, num_classes=3, embed_dim=16, depth=2, num_heads=2,
               mlp_ratio=2.0)
    cfg.update(kw)
    m = VisionTransformer(ViTConfig(**cfg), dtype=dtype, seed=seed)
    m.preprocess = PRE
    return m


def toy_data(n=40, seed=0, size=8):
    """Three classes a ViT can tell apart: a bright square in a different corner per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    h = size // 2
    for i, k in enumerate(labels):
        r, c = [(0, 0), (0, h), (h, 0)][k]
        images[i, r:r + h, c:c + h] += 180
    return ArrayDataset(images, labels, ("a", "b", "c"))


def strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# --- resume -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_resume_is_bit_for_bit(tmp_path, opt):
    """4 epochs straight == 2 epochs, a fresh process-like restart, 2 more: params, state, metrics."""
    data, held = toy_data(36), toy_data(12, seed=1)
    cfg = TrainConfig(epochs=4, batch_size=5, accum_steps=2, optimizer=opt, lr=3e-3, warmup_epochs=1,
                      clip_grad=0.5, label_smoothing=0.1, nesterov=opt == "sgd", seed=7)
    # dropout, attention dropout and drop path on: the dropout generators must resume too
    arch = dict(drop_ratio=0.1, attn_drop_ratio=0.1, drop_path_ratio=0.2)
    straight = tiny(**arch)
    h1 = train(straight, data, held, cfg, out=tmp_path / "a", progress=False)
    first = tiny(**arch)
    train(first, data, held, cfg, out=tmp_path / "b", progress=False, stop_after=2)
    resumed = tiny(seed=123, **arch)  # different initial weights: all must come from the checkpoint
    h2 = train(resumed, data, held, cfg, out=tmp_path / "b", resume=True, progress=False)
    assert len(h1) == len(h2) == 4
    assert strip(h1) == strip(h2)
    for n in straight.params:
        assert np.array_equal(straight.params[n], resumed.params[n]), n
    _, _, opt_a, _ = read_checkpoint(tmp_path / "a" / "checkpoint.npz")
    _, _, opt_b, _ = read_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert opt_a["steps"] == opt_b["steps"] == 4 * 4
    for n, slots in opt_a["state"].items():
        for k, v in slots.items():
            assert np.array_equal(v, opt_b["state"][n][k]), (n, k)
    # and the run is not trivially reproducible: another seed trains differently
    other = tiny(**arch)
    train(other, data, held, cfg, seed=8, progress=False)
    assert not np.array_equal(other.params["head.weight"], straight.params["head.weight"])


def test_run_folder_outputs_and_refusals(tmp_path):
    data = toy_data(20)
    out = tmp_path / "run"
    hist = train(tiny(), data, toy_data(9, seed=2), TrainConfig(epochs=2, batch_size=8), out=out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == json.loads(json.dumps(hist))
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step,lr,train_loss") and len(csv_lines) == 3
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.csv", "metrics.jsonl", "model.npz"]
    loaded = npvit.load(out / "model.npz")  # the deployable model: same weights, names, preprocessing
    assert loaded.config.label_names == ("a", "b", "c") and loaded.preprocess == PRE
    with pytest.raises(ValueError, match="already holds a training run"):
        train(tiny(), data, None, TrainConfig(epochs=2), out=out, progress=False)
    with pytest.raises(ValueError, match="lr: 0.001 -> 0.002"):
        train(tiny(), data, None, TrainConfig(epochs=3, batch_size=8, lr=2e-3), out=out, resume=True,
              progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(), data, None, TrainConfig(epochs=2), out=tmp_path / "empty", resume=True, progress=False)
    # a longer run continues from epoch 2
    more = train(tiny(), data, None, TrainConfig(epochs=3, batch_size=8), out=out, resume=True, progress=False)
    assert [r["epoch"] for r in more] == [1, 2, 3]


def test_progress_lines_name_loss_and_throughput():
    import io
    buf = io.StringIO()
    train(tiny(), toy_data(16), toy_data(8, seed=1), TrainConfig(epochs=1, batch_size=8), stream=buf)
    line = buf.getvalue()
    assert "epoch 1/1: train loss" in line and "img/s" in line and "top-5" in line


# --- one step, exactly ---------------------------------------------------------------------------------
def test_accumulation_equals_one_big_batch():
    """Steps of 3 micro-batches of 8 == steps of 24 (44 images: the last step is 8+8+4 == 20)."""
    data = toy_data(44)
    cfg = dict(epochs=1, optimizer="sgd", lr=0.05, momentum=0.9, augment=False, weight_decay=1e-3)
    a, b = tiny("float64"), tiny("float64")
    train(a, data, None, TrainConfig(batch_size=24, accum_steps=1, **cfg), progress=False)
    train(b, data, None, TrainConfig(batch_size=8, accum_steps=3, **cfg), progress=False)
    moved = 0
    for n in a.params:
        np.testing.assert_allclose(a.params[n], b.params[n], rtol=1e-11, atol=1e-13, err_msg=n)
        moved += not np.array_equal(a.params[n], tiny("float64").params[n])
    assert moved > 10


def test_training_step_matches_a_hand_written_one():
    """The loop's first step == forward, loss, backward, clip, schedule, AdamW by hand."""
    data = toy_data(16)
    cfg = TrainConfig(epochs=1, batch_size=16, augment=False, lr=1e-2, warmup_epochs=0, clip_grad=0.1,
                      label_smoothing=0.2, weight_decay=0.05)
    looped, manual = tiny("float64"), tiny("float64")
    train(looped, data, None, cfg, progress=False)
    order = np.random.default_rng([cfg.seed, 0, 0]).permutation(16)
    from npvit.train.data import eval_batch
    x, y = eval_batch(data, order, PRE), data.labels[order]
    opt = optim.AdamW(manual, lr=1e-2, weight_decay=0.05)
    loss, d = npvit.cross_entropy(manual.forward(x.astype("float64"), train=True, grad=True), y, 0.2)
    _, g = manual.backward(d)
    assert optim.clip_grad_norm(g, 0.1) > 0.1  # clipping really acts
    optim.Schedule(opt, total_steps=1).step()
    opt.step(g)
    for n in looped.params:
        np.testing.assert_allclose(looped.params[n], manual.params[n], rtol=1e-13, atol=1e-15, err_msg=n)


# --- loss scaling ----------------------------------------------------------------------------------------
def test_loss_scaler_matches_torch_gradscaler():
    """Same losses (some overflowing) -> same skipped steps, scale sequence and weights as torch."""
    torch = pytest.importorskip("torch")
    pattern = [0, 1, 0, 0, 0, 1, 1, 0, 0, 0]
    p = {"w": np.array([1.0, -2.0, 0.5], dtype=np.float32)}
    opt = optim.SGD(p, lr=0.1, momentum=0.9)
    scaler = optim.DynamicLossScaler(opt, init_scale=16.0, growth_interval=2)
    tp = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    ts = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=2)
    for bad in pattern:
        factor = np.float32(np.inf) if bad else np.float32(1)
        with np.errstate(invalid="ignore"):
            grads = {"w": scaler.scale(2 * p["w"]) * factor}            # d(sum w^2)/dw, scaled
        stepped = scaler.step(scaler.unscale(grads))
        topt.zero_grad()
        ts.scale((tp * tp).sum() * float(factor)).backward()
        ts.step(topt)
        ts.update()
        assert stepped == (not bad)
        assert scaler.scale_value == ts.get_scale()
        np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=2e-7, atol=0)


def test_master_weights_keep_updates_too_small_for_the_model_dtype():
    """float32 model + float64 master (the CPU stand-in for float16 + float32): updates below one
    float32 ulp are lost by a plain float32 optimizer but accumulate in the master copy."""
    w0 = np.full(4, 1.0, dtype=np.float32)
    plain = {"w": w0.copy()}
    mixed = {"w": w0.copy()}
    opt_plain = optim.SGD(plain, lr=1e-8)
    scaler = optim.DynamicLossScaler(optim.SGD(mixed, lr=1e-8), init_scale=2.0 ** 10, master_dtype="float64")
    g = {"w": np.ones(4, dtype=np.float32)}
    for _ in range(100):
        opt_plain.step(g)
        scaler.step(scaler.unscale({"w": scaler.scale(g["w"])}))
    assert np.array_equal(plain["w"], w0)                        # 1e-8 < ulp(1)/2 = 6e-8: lost
    np.testing.assert_allclose(scaler.master["w"], 1.0 - 1e-6, rtol=0, atol=1e-13)  # 100 float64 roundings
    assert np.array_equal(mixed["w"], scaler.master["w"].astype(np.float32))
    assert mixed["w"][0] < 1.0                                   # the model sees the sum of them


def test_training_with_loss_scaling_resumes_and_learns(tmp_path):
    data = toy_data(24)
    cfg = TrainConfig(epochs=2, batch_size=8, loss_scaling=True, master_dtype="float64", lr=3e-3)
    a = tiny()
    h = train(a, data, None, cfg, out=tmp_path / "a", progress=False)
    b = tiny()
    train(b, data, None, cfg, out=tmp_path / "b", progress=False, stop_after=1)
    train(b, data, None, cfg, out=tmp_path / "b", resume=True, progress=False)
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)
    assert h[-1]["train_loss"] < h[0]["train_loss"] + 0.5 and math.isfinite(h[-1]["train_loss"])


# --- bad input ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow on the way to the NaN
def test_nan_loss_stops_with_the_step(tmp_path):
    data = toy_data(24)
    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=1e30, momentum=0.0, augment=False)
    model = tiny()
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at step \d+ \(epoch 1, batch \d of 3\)"):
        train(model, data, None, cfg, out=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.npz").exists()  # nothing half-broken was saved


def test_labels_out_of_range_are_named():
    data = toy_data(10)
    with pytest.raises(ValueError, match="labels up to 2 but the model's head has 2 classes"):
        train(tiny(num_classes=2), data, None, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="label 5 .* out of range for 3 classes"):
        ArrayDataset(np.zeros((2, 8, 8), np.uint8), [0, 5], ("a", "b", "c"))
    with pytest.raises(ValueError, match=">= 0"):
        ArrayDataset(np.zeros((2, 8, 8), np.uint8), [0, -1])
    with pytest.raises(TypeError, match="integer class indices"):
        ArrayDataset(np.zeros((2, 8, 8), np.uint8), [0.5, 1.0])
    with pytest.raises(ValueError, match="2 labels"):
        ArrayDataset(np.zeros((2, 8, 8), np.uint8), [0, 1, 1])
    with pytest.raises(ValueError, match=r"channels first\?"):
        ArrayDataset(np.zeros((2, 3, 8, 8), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ArrayDataset(np.full((2, 8, 8), 255.0), [0, 1])


def write_folder(root, classes, n=4, size=12, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 80, (size, size + 2, 3)).astype(np.uint8)
            img[: size // 2, : size // 2] += 150 if k == 0 else 0
            img[size // 2:, size // 2:] += 150 if k == 1 else 0
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_image_folder_errors_name_the_problem(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "flat")
    write_folder(tmp_path / "d", ["cat", "dog"])
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty holds no images"):
        ImageFolderDataset(tmp_path / "d")
    (tmp_path / "d" / "empty").rmdir()
    (tmp_path / "d" / "dog" / "broken.png").write_bytes(b"this is not a png")
    ds = ImageFolderDataset(tmp_path / "d")
    assert ds.label_names == ("cat", "dog") and len(ds) == 9
    with pytest.raises(ValueError, match=r"broken\.png"):
        train(tiny(num_classes=2), ds, None, TrainConfig(epochs=1, batch_size=4), progress=False)


def test_image_folder_trains_from_the_command_line_and_finetunes(tmp_path):
    """CLI: train a model on a folder, then fine-tune its file on a 3-class folder with frozen layers."""
    pytest.importorskip("PIL")
    from npvit.cli import main
    write_folder(tmp_path / "two" / "train", ["cat", "dog"], n=6)
    write_folder(tmp_path / "two" / "val", ["cat", "dog"], n=2, seed=1)
    args = ["train", "--data", str(tmp_path / "two"), "--model", "vit_tiny_patch16_224", "--img-size", "8",
            "--patch-size", "4", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--epochs", "2",
            "--batch-size", "4", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "run")]) == 0
    base = npvit.load(tmp_path / "run" / "model.npz")
    assert base.config.label_names == ("cat", "dog") and base.config.num_classes == 2
    write_folder(tmp_path / "three", ["x", "y", "z"], n=4, seed=2)
    assert main(["train", "--data", str(tmp_path / "three"), "--finetune", str(tmp_path / "run" / "model.npz"),
                 "--freeze-layers", "--epochs", "1", "--batch-size", "4", "--quiet", "--val-split", "0.25",
                 "--out", str(tmp_path / "ft")]) == 0
    tuned = npvit.load(tmp_path / "ft" / "model.npz")
    assert tuned.config.num_classes == 3 and tuned.config.label_names == ("x", "y", "z")
    for n, p in tuned.params.items():
        if n.startswith("head."):
            assert p.shape[0] == 3
        else:
            assert np.array_equal(p, base.params[n]), f"{n} changed although frozen"
    # a second run into the same folder without --resume is refused with exit status 2
    assert main(args + ["--out", str(tmp_path / "run")]) == 2


# --- fine-tuning helpers --------------------------------------------------------------------------------
def test_new_head_keeps_the_body_and_drops_pre_logits():
    src = tiny(representation_size=12, num_classes=5)
    body = {n: p.copy() for n, p in src.params.items()}
    ft = new_head(src, 3, label_names=("a", "b", "c"))
    assert ft.config.representation_size is None and ft.config.num_classes == 3
    assert "pre_logits.fc.weight" not in ft.params and ft.params["head.weight"].shape == (3, 16)
    for n, p in ft.params.items():
        if not n.startswith("head."):
            assert np.array_equal(p, body[n]), n
    kept = new_head(src, 3, keep_pre_logits=True)
    assert np.array_equal(kept.params["pre_logits.fc.weight"], body["pre_logits.fc.weight"])
    assert trainable_names(kept, freeze_layers=True) == ["pre_logits.fc.weight", "pre_logits.fc.bias",
                                                         "head.weight", "head.bias"]
    assert trainable_names(kept, train_only=["blocks.1", "norm"]) == \
        [n for n in kept.params if n.startswith(("blocks.1.", "norm."))]
    distilled = new_head(tiny(distilled=True), 4)
    assert distilled.params["head_dist.weight"].shape == (4, 16)


def test_freeze_trains_only_the_head():
    model = tiny()
    before = {n: p.copy() for n, p in model.params.items()}
    cfg = TrainConfig(epochs=1, batch_size=8, trainable=tuple(trainable_names(model, freeze_layers=True)))
    train(model, toy_data(16), None, cfg, progress=False)
    changed = {n for n in model.params if not np.array_equal(model.params[n], before[n])}
    assert changed == {"head.weight", "head.bias"}


# --- data ------------------------------------------------------------------------------------------------
def test_crop_boxes_follow_the_requested_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(300):
        top, left, h, w = crop_box(rng, 40, 60, (0.2, 0.6), (0.5, 2.0))
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
        # rounding h and w moves the area and ratio a little off the drawn values
        assert 0.2 * 0.85 <= h * w / 2400 <= 0.6 * 1.15 and 0.5 * 0.85 <= w / h <= 2.0 * 1.15
    assert crop_box(rng, 10, 100, (1.0, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)  # falls back: centred


def test_train_transform_flip_and_identity_crop():
    data = toy_data(6)
    base = TrainTransform(PRE, scale=(1, 1), ratio=(1, 1), hflip=0.0)(data, np.arange(6), np.random.default_rng(0))
    ref = np.stack([(im.astype(np.float32) / 255 - 0.5) / 0.5 for im in data.images(range(6))]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(base, ref, rtol=0, atol=1e-6)    # a whole-image crop at the same size
    flipped = TrainTransform(PRE, scale=(1, 1), ratio=(1, 1), hflip=1.0)(data, np.arange(6), np.random.default_rng(0))
    np.testing.assert_array_equal(flipped, base[..., ::-1])
    t = TrainTransform(PRE, scale=(0.3, 1))
    a = t(data, np.arange(6), np.random.default_rng(5))
    assert np.array_equal(a, t(data, np.arange(6), np.random.default_rng(5)))
    assert not np.array_equal(a, t(data, np.arange(6), np.random.default_rng(6)))


def test_split_and_evaluate():
    data = toy_data(50)
    tr, te = split(data, 0.2, seed=3)
    assert len(tr) == 40 and len(te) == 10
    ev = evaluate(tiny(), te)
    assert set(ev) == {"loss", "top1", "top5", "n"} and ev["top5"] == 1.0  # 3 classes: top-5 is everything


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_training_checkpoint_is_a_clear_error(tmp_path, damage):
    """--resume reads through the checked .npz reader: a cut or corrupted checkpoint is a ValueError
    that names the file, never a zipfile/zlib exception."""
    model = VisionTransformer(ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, num_classes=3))
    opt = optim.SGD(model, lr=0.1)
    from npvit.train.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, opt, {"format": "npvit-train", "version": 1, "epoch": 1})
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checkpoint"):
        read_checkpoint(path)


def test_an_export_target_that_is_not_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    from npvit.cli import main

    assert main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--quiet",
                 "--export", str(tmp_path / "folder")]) == 2
    assert "folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()                          # nothing was trained
