"""PyTorch state dicts under timm's names (timm, DeiT, the seed) and timm hub folders, against timm.

Files are written by the owning libraries (torch.save, safetensors.torch, timm's save_for_hf) from
randomised models; npvit's logits on real photos must match timm's (tolerances: formats_refs.TOL).
"""
import numpy as np
import pytest

import npvit
from npvit.formats import CheckpointError
from formats_refs import TINY, assert_close, photos, randomize, run_torch, timm_vit

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


def _sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how", ["pth", "wrapped_pth", "module_prefix", "safetensors_torch", "bf16_safetensors"])
def test_state_dict_files(tmp_path, how, dtype):
    ref = timm_vit(seed=10)
    sd = _sd(ref)
    if how == "pth":
        path = tmp_path / "vit.pth"
        torch.save(sd, path)
    elif how == "wrapped_pth":
        path = tmp_path / "ckpt.pt"
        torch.save({"model": sd, "epoch": 3, "best_acc": 0.5}, path)
    elif how == "module_prefix":  # DataParallel training checkpoint
        path = tmp_path / "ddp.bin"
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    elif how == "safetensors_torch":
        from safetensors.torch import save_file

        path = tmp_path / "vit.safetensors"
        save_file(sd, str(path))
    else:  # bf16 weights: npvit reads them with NumPy (uint16 << 16), the reference rounds the same way
        from safetensors.torch import save_file

        path = tmp_path / "vit_bf16.safetensors"
        save_file({k: v.bfloat16() for k, v in sd.items()}, str(path))
        ref.load_state_dict({k: v.bfloat16().float() for k, v in sd.items()})
    m = npvit.load(path, num_heads=4, dtype=dtype)
    assert m.config.img_size == (32, 32) and m.config.patch_size == (8, 8) and m.config.depth == 2
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.crop_pct == 0.9
    x = photos(32, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)


def test_detection_ignores_the_file_name(tmp_path):
    ref = timm_vit(seed=11)
    path = tmp_path / "weights.npz"  # a torch zip with a misleading suffix
    torch.save(_sd(ref), path)
    x = photos(32, "float64")
    assert_close(npvit.load(path, num_heads=4, dtype="float64")(x), run_torch(ref, x), "float64")


def test_hub_folder_with_config(tmp_path):
    """timm's save_for_hf: config.json (model_args, pretrained_cfg, label_names) + model.safetensors."""
    from timm.models import _hub

    ref = randomize(timm.create_model("vit_tiny_patch16_224", **TINY), seed=12)
    names = [f"class {i}" for i in range(10)]
    _hub.save_for_hf(ref, str(tmp_path / "hub"), safe_serialization=True,
                     model_config={"label_names": names})
    m = npvit.load(tmp_path / "hub", dtype="float64")     # heads from config.json: no override needed
    assert m.config.num_heads == 4 and m.config.label_names == tuple(names)
    assert m.preprocess.input_size == (32, 32) and m.preprocess.interpolation == "bicubic"
    x = photos(32, "float64")
    assert_close(m(x), run_torch(ref, x), "float64")


def test_deit_distilled(tmp_path):
    from timm.models.deit import VisionTransformerDistilled

    ref = randomize(VisionTransformerDistilled(**TINY), seed=13)
    path = tmp_path / "deit.pth"
    torch.save(_sd(ref), path)
    for dtype in ("float32", "float64"):
        m = npvit.load(path, num_heads=4, dtype=dtype)
        assert m.config.distilled and m.preprocess.mean == (0.485, 0.456, 0.406)  # DeiT's pipeline
        x = photos(32, dtype)
        assert_close(m(x), run_torch(ref, x), dtype)  # eval: mean of the two heads on both sides


def test_seed_representation_layer(tmp_path):
    """The seed's vit_model.py keeps pre_logits.fc (+tanh); timm dropped it, so the reference is
    timm's pooled features, then that layer and the head in torch."""
    body = timm_vit(seed=14, num_classes=0).double()
    g = torch.Generator().manual_seed(15)
    rep_w, rep_b = torch.randn(32, 64, generator=g) * 0.2, torch.randn(32, generator=g) * 0.2
    head_w, head_b = torch.randn(5, 32, generator=g) * 0.2, torch.randn(5, generator=g) * 0.2
    sd = {k: v.float() for k, v in _sd(body).items()}
    sd.update({"pre_logits.fc.weight": rep_w, "pre_logits.fc.bias": rep_b,
               "head.weight": head_w, "head.bias": head_b})
    path = tmp_path / "seed.pth"
    torch.save(sd, path)
    m = npvit.load(path, num_heads=4, dtype="float64")
    assert m.config.representation_size == 32 and m.config.num_classes == 5
    x = photos(32, "float64")
    body.load_state_dict({k: v.double() for k, v in sd.items() if not k.startswith(("pre_logits", "head"))})
    with torch.no_grad():
        f = torch.tanh(torch.nn.functional.linear(body(torch.from_numpy(x)), rep_w.double(), rep_b.double()))
        want = torch.nn.functional.linear(f, head_w.double(), head_b.double()).numpy()
    assert_close(m(x), want, "float64")


def test_standard_width_needs_no_heads(tmp_path):
    ref = timm_vit(seed=16, embed_dim=192, num_heads=3, depth=1, patch_size=16)
    path = tmp_path / "ti.pth"
    torch.save(_sd(ref), path)
    m = npvit.load(path, dtype="float64")
    assert m.config.num_heads == 3
    x = photos(32, "float64")
    assert_close(m(x), run_torch(ref, x), "float64")
    # a wrong guess would be silent, so the override must win
    assert npvit.load(path, num_heads=6).config.num_heads == 6


def test_unknown_width_asks_for_num_heads(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(_sd(timm_vit(seed=17)), path)
    # every head count that fits is listed (the true one, 4, among them), and none is picked
    with pytest.raises(CheckpointError, match=r"will not guess: pass num_heads=N.* divide 64: "
                       r"1 \(head_dim 64\), 2 \(head_dim 32\), 4 \(head_dim 16\), 8 \(head_dim 8\)$"):
        npvit.load(path)


def test_new_num_classes_gets_a_fresh_head(tmp_path):
    ref = timm_vit(seed=18)
    path = tmp_path / "vit.pth"
    torch.save(_sd(ref), path)
    with pytest.warns(UserWarning, match="replaced by a freshly initialised 3-class head"):
        m = npvit.load(path, num_heads=4, num_classes=3, dtype="float64")
    assert m.params["head.weight"].shape == (3, 64)
    assert np.all(m.params["head.bias"] == 0) and 0 < np.abs(m.params["head.weight"]).std() < 0.02
    # the body is untouched: features equal timm's pre-head features
    x = photos(32, "float64")
    with torch.no_grad():
        feats = ref.double().forward_head(ref.double().forward_features(torch.from_numpy(x)),
                                          pre_logits=True).numpy()
    assert_close(npvit.load(path, num_heads=4, num_classes=0, dtype="float64")(x), feats, "float64")


@pytest.mark.parametrize("kw,match", [
    ({"init_values": 1e-5}, "ls1.gamma"),                              # LayerScale
    ({"reg_tokens": 4, "no_embed_class": True}, "reg_token"),          # register tokens
    ({"global_pool": "avg"}, "fc_norm"),                                # fc_norm after pooling
])
def test_unsupported_timm_variants_are_refused(tmp_path, kw, match):
    path = tmp_path / "variant.pth"
    torch.save(_sd(timm_vit(seed=19, **kw)), path)
    with pytest.raises(ValueError, match=match):
        npvit.load(path, num_heads=4)
