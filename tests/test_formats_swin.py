"""Swin Transformer checkpoints, each written by the library that owns the format, against that library.

timm state dicts (.pth, wrapped, .safetensors, a hub folder), the original microsoft/Swin-Transformer
layout (merging at the end of a stage, ``head.*``, saved buffers), Hugging Face folders; window
resampling against timm's own checkpoint filter; ``npvit convert`` both ways; bad files and inputs.
Logits on real photos must match (formats_refs.TOL: float64 1e-9, float32 2e-5 relative)."""
import re

import numpy as np
import pytest

import npvit
from formats_refs import assert_close, photos, randomize, run_torch
from npvit.formats import CheckpointError

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

SMALL = dict(img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
             num_classes=7, drop_path_rate=0.0)


def timm_swin(seed=0, **kw):
    from timm.models.swin_transformer import SwinTransformer

    return randomize(SwinTransformer(**dict(SMALL, **kw)), seed)


def _sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def original_layout(ref):
    """timm's model saved the way microsoft/Swin-Transformer saves: merging at the end of stage i
    (layers.i.downsample, i = 0..), ``head.*``, and its persistent buffers."""
    sd = {}
    for k, v in _sd(ref).items():
        k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        sd[k.replace("head.fc.", "head.")] = v
    for name, module in ref.named_modules():
        if hasattr(module, "relative_position_index"):
            sd[name + ".relative_position_index"] = module.relative_position_index.clone()
        if getattr(module, "attn_mask", None) is not None:
            sd[name + ".attn_mask"] = module.attn_mask.clone()
    return sd


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how", ["pth", "wrapped_pth", "safetensors", "hub_folder"])
def test_timm_files(tmp_path, how, dtype):
    ref = timm_swin(seed=1)
    if how == "pth":
        path = tmp_path / "swin.pth"
        torch.save(_sd(ref), path)
    elif how == "wrapped_pth":
        path = tmp_path / "ckpt.pt"
        torch.save({"state_dict": {"module." + k: v for k, v in _sd(ref).items()}, "epoch": 2}, path)
    elif how == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "swin.safetensors"
        save_file(_sd(ref), str(path))
    else:  # timm's save_for_hf: config.json (architecture, model_args, pretrained_cfg) + weights
        from timm.models import _hub

        ref = randomize(timm.create_model("swin_tiny_patch4_window7_224", **SMALL), seed=1)
        ref.pretrained_cfg = dict(ref.pretrained_cfg, input_size=(3, 64, 64), crop_pct=0.95,
                                  mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
        path = tmp_path / "hub"
        _hub.save_for_hf(ref, str(path), safe_serialization=True, model_args=dict(img_size=64, window_size=4))
    kwargs = {} if how == "hub_folder" else dict(img_size=64)  # a bare state dict does not say its size
    m = npvit.load(path, dtype=dtype, **kwargs)
    assert isinstance(m, npvit.SwinTransformer)
    assert m.config.depths == (2, 2) and m.config.num_heads == (2, 4) and m.config.window_size == 4
    assert m.config.window_rule == "timm"
    if how == "hub_folder":
        assert m.preprocess.crop_pct == 0.95 and m.preprocess.mean == (0.4, 0.5, 0.6)
    else:  # timm's Swin configs: bicubic, crop 0.9, ImageNet mean and std
        assert m.preprocess.crop_pct == 0.9 and m.preprocess.mean == (0.485, 0.456, 0.406)
    x = photos(64, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)


def test_full_size_swin_tiny_file_predicts_like_timm(tmp_path):
    """swin_tiny at 224 with no size given (the standard relation: window 7 -> 224), on photos
    through npvit's own preprocessing, equal to timm's transforms + model."""
    from PIL import Image

    ref = randomize(timm.create_model("swin_tiny_patch4_window7_224"), seed=2, scale=0.02)
    torch.save(_sd(ref), tmp_path / "tiny.pth")
    m = npvit.load(tmp_path / "tiny.pth")
    assert m.config.img_size == (224, 224) and m.num_params() == 28_288_354
    paths = [f"tests/data/{n}.png" for n in ("chelsea", "coffee")]
    cfg = timm.data.resolve_data_config({}, model=ref)
    transform = timm.data.create_transform(**cfg)
    with torch.no_grad():
        want = torch.softmax(ref(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])), -1).numpy()
    got = m.predict(paths, topk=3)
    for g, w in zip(got, want):
        top = np.argsort(-w)[:3]
        assert [name for name, _ in g] == [npvit.labels.imagenet_names()[i] for i in top]
        np.testing.assert_allclose([p for _, p in g], w[top], rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_original_microsoft_layout(tmp_path, dtype):
    """Merging at the end of each stage, head.weight, and the buffers (checked, then dropped); the
    image size read off the saved masks; the original's window rule (Hugging Face's)."""
    ref = timm_swin(seed=3)
    torch.save({"model": original_layout(ref), "epoch": 300}, tmp_path / "swin_orig.pth")
    m = npvit.load(tmp_path / "swin_orig.pth", dtype=dtype)
    assert m.config.img_size == (64, 64) and m.config.window_rule == "hf"
    assert m.preprocess.crop_pct == pytest.approx(224 / 256)
    x = photos(64, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)


@pytest.mark.parametrize("which", ["attn_mask", "relative_position_index"])
def test_original_buffers_that_disagree_are_refused(tmp_path, which):
    sd = original_layout(timm_swin(seed=4))
    name = next(k for k in sd if k.endswith(which))
    sd[name] = torch.flip(sd[name], dims=(-1,))
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)}.*(window|grid)"):
        npvit.load(tmp_path / "bad.pth")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hugging_face_folder(tmp_path, dtype):
    """save_pretrained's folder (old on-disk names: attention.self.query ..., merging at the end of
    each stage) with its config and an image processor's config."""
    from transformers import SwinConfig, SwinForImageClassification, ViTImageProcessor

    hc = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                    num_labels=3, id2label={0: "ant", 1: "bee", 2: "cat"}, label2id={"ant": 0, "bee": 1, "cat": 2},
                    use_absolute_embeddings=True)
    ref = randomize(SwinForImageClassification(hc), seed=5)
    ref.save_pretrained(tmp_path / "hf")
    proc = ViTImageProcessor(size={"height": 64, "width": 64}, resample=3, image_mean=[0.485, 0.456, 0.406],
                             image_std=[0.229, 0.224, 0.225])
    proc.save_pretrained(tmp_path / "hf")
    m = npvit.load(tmp_path / "hf", dtype=dtype)
    assert m.config.window_rule == "hf" and m.config.ape and m.config.label_names == ("ant", "bee", "cat")
    x = photos(64, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)
    # predict follows the processor config: the same tensor as the processor's Pillow backend
    # (its default torchvision backend differs by one level on a few pixels: test_preprocess.py)
    from PIL import Image
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    img = Image.open("tests/data/chelsea.png").convert("RGB")
    pil = ViTImageProcessorPil.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        want = torch.softmax(ref.float()(**pil(img, return_tensors="pt")).logits, -1)[0].numpy()
    got = dict(m.predict(img, topk=3))
    np.testing.assert_allclose([got[n] for n in ("ant", "bee", "cat")], want, rtol=2e-5, atol=1e-6)


def test_window_change_resamples_tables_as_timm(tmp_path):
    """A window-4 file loaded with window 6 (and a larger image): equal to timm's model built that
    way and filled by timm's own checkpoint filter (its relative-position resize)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    src = timm_swin(seed=6)
    torch.save(_sd(src), tmp_path / "w4.pth")
    dst = timm_swin(seed=7, img_size=96, window_size=6)
    dst.load_state_dict(checkpoint_filter_fn(_sd(src), dst))
    m = npvit.load(tmp_path / "w4.pth", img_size=96, window_size=6)
    assert m.config.stage_window(0)[0] == (6, 6)
    x = photos(96, "float32")
    assert_close(m(x), run_torch(dst.float(), x), "float32")


def test_convert_both_ways(tmp_path):
    """The original layout -> npvit .npz -> timm .safetensors -> back: the same model each time,
    and the timm file loads into timm."""
    from npvit.cli import main

    ref = timm_swin(seed=8)
    torch.save({"model": original_layout(ref)}, tmp_path / "orig.pth")
    assert main(["convert", str(tmp_path / "orig.pth"), str(tmp_path / "a.npz")]) == 0
    assert main(["convert", str(tmp_path / "a.npz"), str(tmp_path / "b.safetensors")]) == 0
    x = photos(64, "float32")
    a, b = npvit.load(tmp_path / "a.npz"), npvit.load(tmp_path / "b.safetensors")
    assert a.config == b.config and a.config.window_rule == "hf"
    np.testing.assert_array_equal(a(x), b(x))
    from safetensors.torch import load_file

    again = timm_swin(seed=0)
    again.load_state_dict(load_file(str(tmp_path / "b.safetensors")))
    assert_close(a(x), run_torch(again, x), "float32")


def test_bad_inputs_and_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        npvit.create_model("swin_tiny_patch4_window7_224", img_size=226)
    m = npvit.SwinTransformer(npvit.SwinConfig(**SMALL))
    with pytest.raises(ValueError, match="expected 64x64 images"):
        m(np.zeros((1, 3, 60, 60), np.float32))
    sd = _sd(timm_swin(seed=9))
    sd["layers.1.blocks.0.attn.relative_position_bias_table"] = torch.zeros(25, 4)   # window 3, not 4
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="windows disagree between stages"):
        npvit.load(tmp_path / "mixed.pth", img_size=64)
    torch.save(_sd(timm_swin(seed=9)), tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="depths=.*does not fit"):
        npvit.load(tmp_path / "ok.pth", img_size=64, depths=(2, 3))
    with pytest.raises(TypeError, match="unknown Swin setting"):
        npvit.load(tmp_path / "ok.pth", depth=12)
    extra = _sd(timm_swin(seed=9))
    extra["layers.0.blocks.0.attn.logit_scale"] = torch.zeros(2, 1, 1)  # Swin V2
    torch.save(extra, tmp_path / "v2.pth")
    with pytest.raises(CheckpointError, match="logit_scale"):
        npvit.load(tmp_path / "v2.pth")


def test_22k_head_predicts_imagenet22k_names():
    m = npvit.create_model("swin_base_patch4_window7_224_in22k", depths=(1, 1, 1, 1), img_size=32)
    assert m.config.num_classes == 21841
    (name, _), = m.predict(photos(32)[0].transpose(1, 2, 0) * 0.5 + 0.5, topk=1)
    assert name in npvit.labels.imagenet_names("imagenet22k")


def test_a_stage_clipped_to_a_non_square_window_round_trips(tmp_path):
    """A 32x24 image in patches of 2 with window 4: the last stage's 4x3 grid clips the window to
    4x3 (timm's rule), whose table is not square; npvit's file and a timm state dict load back."""
    cfg = npvit.SwinConfig(img_size=(32, 24), patch_size=2, window_size=4, embed_dim=8, depths=(1, 1, 1),
                           num_heads=(1, 2, 4), num_classes=3)
    assert cfg.stage_window(2)[0] == (4, 3)
    m = npvit.SwinTransformer(cfg)
    x = photos((32, 24), "float32")
    m.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(npvit.load(tmp_path / "m.npz")(x), m(x))
    torch.save({k: torch.from_numpy(v) for k, v in m.state_dict().items()}, tmp_path / "m.pth")
    np.testing.assert_array_equal(npvit.load(tmp_path / "m.pth", img_size=(32, 24))(x), m(x))
