"""predict: end to end against timm on real photos, then the contract (shapes of the answer,
sorting, labels, batching, preprocessing choice) and bad input.

End-to-end tolerance. The timm model gets random weights (every tensor, LayerNorm affine and
biases included; the head scaled up so that the top classes stand apart) which are copied into
npvit with load_state_dict. In float32 the logits reach |z| ~ 50, where rounding differs by
~1e-5 between the two implementations; a probability's relative error equals the error of its
logit minus the log-normaliser, measured at most 4.3e-5 on the two photos: rtol 2e-4. A
preprocessing mistake of one level on 0.2% of the pixels moves those probabilities by ~8%
(measured), so the test would catch it. In float64 (both sides) the measured error is 1.5e-13:
rtol 1e-10.
"""
from pathlib import Path

import numpy as np
import pytest

import npvit
from npvit.labels import imagenet_names
from npvit.predict import predict, probabilities, resolve_preprocess, softmax64
from npvit.preprocess import preset

DATA = Path(__file__).parent / "data"
PHOTOS = [str(DATA / "chelsea.png"), str(DATA / "coffee.png")]


def randomised_timm(name, dtype=None):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    m = timm.create_model(name, pretrained=False, depth=1).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if n.split(".")[-2:] in (["norm1", "weight"], ["norm2", "weight"], ["norm", "weight"]):
                p.copy_(1 + 0.2 * noise)
            elif n.startswith("head"):
                p.copy_(noise)           # wide logits: the top-5 order is not decided by rounding
            else:
                p.copy_(0.2 * noise)
    return m.double() if dtype == "float64" else m


def timm_probabilities(tm, path, dtype=None):
    """timm's softmax of timm's own eval transform of the photo."""
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    x = create_transform(**resolve_data_config({}, model=tm))(Image.open(path).convert("RGB"))[None]
    with torch.no_grad():
        logits = tm(x.double() if dtype == "float64" else x)
    return torch.softmax(logits.double(), -1)[0].numpy()


def npvit_copy(tm, name, dtype="float32"):
    m = npvit.create_model(name, depth=1, dtype=dtype)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    m.preprocess = preset("deit" if name.startswith("deit") else "timm", m.config.img_size)
    return m


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_top5_matches_timm_on_photos(name):
    """Same five classes in the same order, probabilities within float32 rounding; the distilled
    model's answer is the mean of its two heads, as timm's in eval."""
    tm = randomised_timm(name)
    model = npvit_copy(tm, name)
    names = imagenet_names()
    for path in PHOTOS:
        p = timm_probabilities(tm, path)
        top = np.argsort(-p)[:6]
        # The test means something only if neighbours are further apart than the tolerance.
        assert np.all(-np.diff(p[top]) > 5 * 2e-4 * p[top][:-1]), "near tie: pick another seed"
        got = model.predict(path, topk=5)
        assert [label for label, _ in got] == [names[i] for i in top[:5]]
        np.testing.assert_allclose([prob for _, prob in got], p[top[:5]], rtol=2e-4, atol=0)


def test_float64_matches_timm_to_double_precision():
    tm = randomised_timm("vit_tiny_patch16_224", dtype="float64")
    model = npvit_copy(tm, "vit_tiny_patch16_224", dtype="float64")
    ref = timm_probabilities(tm, PHOTOS[0], dtype="float64")
    np.testing.assert_allclose(probabilities(model, PHOTOS[0])[0], ref, rtol=1e-10, atol=0)


@pytest.fixture(scope="module")
def tiny():
    m = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=10)
    rng = np.random.default_rng(0)
    m.load_state_dict({k: rng.standard_normal(v.shape) * (1.0 if k.startswith("head") else 0.2)
                       for k, v in m.state_dict().items()})
    return m


def test_answer_shapes_follow_hf_pipeline(tiny):
    one = tiny.predict(PHOTOS[0], topk=3)
    assert isinstance(one, list) and len(one) == 3
    assert all(isinstance(label, str) and isinstance(p, float) for label, p in one)
    assert predict(tiny, PHOTOS[0], topk=3) == one            # the method is npvit.predict.predict
    many = tiny.predict(PHOTOS, topk=3)
    assert len(many) == 2 and same_answer(many[0], one)
    listed = tiny.predict([PHOTOS[0]], topk=3)                 # a list of one is still a list
    assert len(listed) == 1 and same_answer(listed[0], one)
    arrays = np.stack([np.asarray(npvit.preprocess.to_rgb(PHOTOS[0]))] * 2)   # (B, H, W, 3)
    assert all(same_answer(a, one) for a in tiny.predict(arrays, topk=3))


def same_answer(a, b):
    """Same labels; probabilities within float32 rounding (batches of another size may take
    another BLAS path: ~1e-7 relative)."""
    return ([label for label, _ in a] == [label for label, _ in b]
            and np.allclose([p for _, p in a], [p for _, p in b], rtol=1e-5, atol=1e-9))


def test_sorted_probabilities_sum_to_one(tiny):
    full = tiny.predict(PHOTOS[1], topk=10)
    probs = [p for _, p in full]
    assert probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1.0) < 1e-12                     # float64 softmax
    assert sorted(label for label, _ in full) == [str(i) for i in range(10)]   # indices as names
    assert tiny.predict(PHOTOS[1], topk=1000) == full         # topk is capped at the classes


def test_softmax64_is_stable():
    p = softmax64(np.array([[1000.0, -1000.0, 999.0], [0.0, 0.0, 0.0]], np.float32))
    assert p.dtype == np.float64 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p[1], 1 / 3, rtol=1e-15)
    np.testing.assert_allclose(p[0, 0] / p[0, 2], np.e, rtol=1e-12)


def test_batch_size_does_not_change_answers(tiny):
    images = PHOTOS + [np.asarray(npvit.preprocess.to_rgb(PHOTOS[0]))[::2, ::2]]
    a = probabilities(tiny, images, batch_size=1)
    b = probabilities(tiny, images, batch_size=2)
    # Different batch shapes may take different BLAS paths: float32 rounding (~1e-6 relative).
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    assert a.shape == (3, 10)


def test_labels_override_and_model_names(tiny):
    names = [f"class {i}" for i in range(10)]
    got = tiny.predict(PHOTOS[0], topk=2, labels=names)
    idx = [str(i) for i in range(10)]
    plain = tiny.predict(PHOTOS[0], topk=2)
    assert [label for label, _ in got] == [names[idx.index(label)] for label, _ in plain]
    named = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8,
                               num_classes=10, label_names=names)
    named.load_state_dict(tiny.state_dict())
    assert named.predict(PHOTOS[0], topk=2) == got
    with pytest.raises(ValueError, match="got 3 labels for a 10-class head"):
        tiny.predict(PHOTOS[0], labels=["a", "b", "c"])
    with pytest.raises(TypeError, match="sequence of 10 class names"):
        tiny.predict(PHOTOS[0], labels="abc")


def test_imagenet_heads_get_imagenet_names():
    for n, set_name in [(1000, "imagenet1k"), (21843, "imagenet21k")]:
        m = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=16,
                               embed_dim=24, num_heads=2, num_classes=n)
        labels = [label for label, _ in m.predict(PHOTOS[0], topk=n)]
        assert sorted(labels) == sorted(imagenet_names(set_name))


def test_preprocessing_choice(tiny):
    assert resolve_preprocess(tiny) == preset("timm", (32, 32))            # model without its own
    base = probabilities(tiny, PHOTOS[0])
    np.testing.assert_array_equal(probabilities(tiny, PHOTOS[0], preprocess="timm"), base)
    hf = probabilities(tiny, PHOTOS[0], preprocess=preset("hf", 32))
    assert np.abs(hf - base).max() > 1e-4                                   # it is really used
    np.testing.assert_array_equal(probabilities(tiny, PHOTOS[0], preprocess="hf"), hf)
    with pytest.raises(ValueError, match="makes 224x224 images but the model takes 32x32"):
        tiny.predict(PHOTOS[0], preprocess=preset("hf"))
    with pytest.raises(ValueError, match="unknown preprocessing preset"):
        tiny.predict(PHOTOS[0], preprocess="imagenet")
    with pytest.raises(TypeError, match="PreprocessConfig or a preset name"):
        tiny.predict(PHOTOS[0], preprocess={"mean": 0})
    saved = tiny.preprocess
    try:
        tiny.preprocess = preset("hf", 32)                                  # the model's own wins
        np.testing.assert_array_equal(probabilities(tiny, PHOTOS[0]), hf)
    finally:
        tiny.preprocess = saved


def test_bad_arguments(tiny, tmp_path):
    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(ValueError, match="topk must be a positive integer"):
            tiny.predict(PHOTOS[0], topk=bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tiny.predict(PHOTOS[0], batch_size=0)
    with pytest.raises(ValueError, match="no images given"):
        tiny.predict([])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        tiny.predict(str(tmp_path / "nope.png"))
    (tmp_path / "fake.jpg").write_bytes(b"GIF89a? no")
    with pytest.raises(ValueError, match=r"image 2: .*fake.jpg is not an image file"):
        tiny.predict(PHOTOS + [str(tmp_path / "fake.jpg")], batch_size=2)
    with pytest.raises(TypeError, match="cannot read an image from a dict"):
        tiny.predict({"image": PHOTOS[0]})
    features = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=0)
    with pytest.raises(ValueError, match="no classification head"):
        features.predict(PHOTOS[0])


def test_backend_gives_the_numpy_answer(tiny, backend):
    """On CuPy (``--backend cupy`` with a GPU) predict moves the batch itself and answers the same
    (float32 on two devices: 1e-5 relative)."""
    ref = probabilities(tiny, PHOTOS)
    m = npvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=10,
                           backend=backend.name)
    m.load_state_dict({k: tiny.backend.to_numpy(v) for k, v in tiny.state_dict().items()})
    np.testing.assert_allclose(probabilities(m, PHOTOS), ref, rtol=1e-5, atol=1e-9)
    assert [label for label, _ in m.predict(PHOTOS[0], topk=3)] == \
        [label for label, _ in tiny.predict(PHOTOS[0], topk=3)]
