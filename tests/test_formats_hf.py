"""Hugging Face ViT folders (save_pretrained) against transformers, on real photos.

Covers ViTForImageClassification (legacy names ``vit.*``, classifier), ViTModel (no prefix, with
and without the pooler), config settings carried over (heads, layer_norm_eps = 1e-12 by default,
hidden_act, id2label) and preprocessor_config.json -> PreprocessConfig.
"""
import pytest

import npvit
from formats_refs import assert_close, photos, randomize

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _config(**kw):
    args = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128)
    args.update(kw)
    return transformers.ViTConfig(**args)


def _run(model, x, what="logits"):
    with torch.no_grad():
        out = model.to(torch.float64 if x.dtype.name == "float64" else torch.float32)(
            pixel_values=torch.from_numpy(x))
    return getattr(out, what).numpy() if what != "cls" else out.last_hidden_state[:, 0].numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act,gelu", [("gelu", "exact"), ("gelu_pytorch_tanh", "tanh")])
def test_image_classification_folder(tmp_path, act, gelu, dtype):
    labels = {i: f"kind {i}" for i in range(7)}
    ref = randomize(transformers.ViTForImageClassification(
        _config(hidden_act=act, num_labels=7, id2label=labels, label2id={v: k for k, v in labels.items()})),
        seed=20)
    ref.save_pretrained(tmp_path / "hf")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(tmp_path / "hf")
    m = npvit.load(tmp_path / "hf", dtype=dtype)
    c = m.config
    assert (c.num_heads, c.norm_eps, c.gelu, c.num_classes) == (4, 1e-12, gelu, 7)
    assert c.label_names == tuple(f"kind {i}" for i in range(7))
    assert m.preprocess.crop_mode == "squash" and m.preprocess.interpolation == "bicubic"
    x = photos(32, dtype)
    assert_close(m(x), _run(ref, x), dtype)


def test_weights_file_alone_uses_the_sibling_config(tmp_path):
    ref = randomize(transformers.ViTForImageClassification(_config(num_labels=3, layer_norm_eps=1e-5)), seed=21)
    ref.save_pretrained(tmp_path / "hf")
    m = npvit.load(tmp_path / "hf" / "model.safetensors", dtype="float64")
    assert m.config.norm_eps == 1e-5 and m.config.num_heads == 4
    assert m.preprocess.crop_mode == "squash"  # HF's preset when there is no preprocessor_config.json
    x = photos(32, "float64")
    assert_close(m(x), _run(ref, x), "float64")


def test_vit_model_with_pooler(tmp_path):
    """ViTModel: the pooler (dense + tanh on the class token) becomes the representation layer, so
    a headless npvit model returns pooler_output; representation_size=None gives the class token."""
    ref = randomize(transformers.ViTModel(_config()), seed=22)
    ref.save_pretrained(tmp_path / "base")
    x = photos(32, "float64")
    with pytest.warns(UserWarning, match="pooler"):
        m = npvit.load(tmp_path / "base", dtype="float64")
    assert m.config.num_classes == 0 and m.config.representation_size == 64
    assert_close(m(x), _run(ref, x, "pooler_output"), "float64", "pooler_output")
    with pytest.warns(UserWarning):
        plain = npvit.load(tmp_path / "base", dtype="float64", representation_size=None)
    assert_close(plain(x), _run(ref, x, "cls"), "float64", "class token")


def test_vit_model_without_pooler(tmp_path):
    ref = randomize(transformers.ViTModel(_config(), add_pooling_layer=False), seed=23)
    ref.save_pretrained(tmp_path / "base")
    m = npvit.load(tmp_path / "base", dtype="float64")
    x = photos(32, "float64")
    assert_close(m(x), _run(ref, x, "cls"), "float64", "class token")


def test_other_model_types_are_refused(tmp_path):
    cfg = transformers.DeiTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=128)
    transformers.DeiTModel(cfg).save_pretrained(tmp_path / "deit")
    with pytest.raises(ValueError, match="model_type='deit'"):
        npvit.load(tmp_path / "deit")
