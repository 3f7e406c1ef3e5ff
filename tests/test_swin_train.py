"""Training a Swin Transformer: parameter groups as timm makes them (layer-wise decay through the
stages, no weight decay on relative position tables), a real run from scratch and a fine-tune from
a Swin checkpoint on the command line, and ViT-only options refused."""
import json

import numpy as np
import pytest

import npvit
from npvit import optim
from npvit.cli import main

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.optim._param_groups import param_groups_layer_decay  # noqa: E402

SMALL = dict(img_size=16, patch_size=2, embed_dim=16, depths=(2, 1, 2), num_heads=(1, 2, 4), window_size=2,
             num_classes=10)


def test_layer_decay_groups_match_timms():
    """Every parameter's lr scale and weight decay equal timm's param_groups_layer_decay on its
    SwinTransformer: blocks counted through the stages, patch merging with its stage's first block."""
    from timm.models.swin_transformer import SwinTransformer

    model = npvit.SwinTransformer(npvit.SwinConfig(**SMALL, ape=False))
    with torch.device("meta"):
        ref = SwinTransformer(**SMALL)
    opt = optim.AdamW(model, lr=1e-3, weight_decay=0.05, layer_decay=0.6)
    ref_groups = param_groups_layer_decay(ref, weight_decay=0.05, no_weight_decay_list=ref.no_weight_decay(),
                                          layer_decay=0.6)
    names = {id(p): n for n, p in ref.named_parameters()}
    theirs = {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in ref_groups for p in g["params"]}
    ours = {n: (g["lr_scale"], g["weight_decay"]) for g in opt.groups for n in g["names"]}
    assert ours.keys() == theirs.keys()
    for n in ours:
        assert ours[n][0] == pytest.approx(theirs[n][0], rel=1e-12) and ours[n][1] == theirs[n][1], n
    assert len({s for s, _ in ours.values()}) == sum(SMALL["depths"]) + 2


def test_train_from_scratch_and_fine_tune_on_the_command_line(tmp_path):
    """A few epochs of a tiny Swin on the digits learn something; the exported model fine-tunes
    (head replaced for a 3-class folder) and its stem stays frozen with --train-only."""
    assert main(["train", "--data", "digits", "--model", "swin_tiny_patch4_window7_224", "--img-size", "16",
                 "--patch-size", "2", "--embed-dim", "16", "--depths", "1", "1", "--num-heads", "2", "4",
                 "--window-size", "4", "--epochs", "4", "--lr", "3e-3", "--layer-decay", "0.9",
                 "--out", str(tmp_path / "run"), "--quiet", "--seed", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_top1"] > 0.3 and rows[-1]["train_loss"] < rows[0]["train_loss"]  # chance: 0.1
    trained = npvit.load(tmp_path / "run" / "model.npz")
    assert isinstance(trained, npvit.SwinTransformer) and trained.config.depths == (1, 1)
    # a three-class image folder fine-tunes it
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "three" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "three" / f"c{c}" / f"{i}.png")
    assert main(["train", "--data", str(tmp_path / "three"), "--finetune", str(tmp_path / "run" / "model.npz"),
                 "--epochs", "1", "--batch-size", "4", "--train-only", "layers.1", "norm", "head",
                 "--out", str(tmp_path / "ft"), "--quiet"]) == 0
    tuned = npvit.load(tmp_path / "ft" / "model.npz")
    assert tuned.config.num_classes == 3
    np.testing.assert_array_equal(tuned.params["layers.0.blocks.0.attn.qkv.weight"],
                                  trained.params["layers.0.blocks.0.attn.qkv.weight"])
    assert not np.array_equal(tuned.params["layers.1.blocks.0.attn.qkv.weight"],
                              trained.params["layers.1.blocks.0.attn.qkv.weight"])


def test_options_of_the_other_architecture_are_refused(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", "swin_tiny_patch4_window7_224", "--depth", "3",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--depth is not a setting of a SWIN model" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--model", "vit_tiny_patch16_224", "--window-size", "3",
                 "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "--window-size is not a setting of a VIT model" in capsys.readouterr().err

