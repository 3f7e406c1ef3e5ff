"""A timm user's habits: timm's keyword names and pretrained tags in ``create_model``, checked
against timm itself; ``npvit --version``."""
import numpy as np
import pytest

import npvit
from npvit.model.timm_names import PRETRAINED_TAGS, split_tag, tag_preprocess, tag_settings
from npvit.model.variants import VARIANTS

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def _shapes(params):
    return {k: tuple(np.shape(v)) for k, v in params.items()}


@pytest.mark.parametrize("kw", [
    dict(SMALL, in_chans=1, mlp_ratio=2.0, qkv_bias=False),
    dict(SMALL, class_token=False, global_pool="avg", fc_norm=False),
    dict(SMALL, global_pool="token"),
    dict(SMALL, img_size=(32, 48), patch_size=(8, 16)),
])
def test_timm_keywords_build_timm_s_architecture(kw):
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
    ours = npvit.create_model("vit_tiny_patch16_224", **kw)
    assert _shapes(ours.state_dict()) == _shapes(ref.state_dict())


def test_timm_keywords_map_to_the_seed_s_settings():
    m = npvit.create_model("vit_tiny_patch16_224", depth=1, drop_path_rate=0.1, attn_drop_rate=0.2,
                           proj_drop_rate=0.3, pos_drop_rate=0.3, drop_rate=0.0, in_chans=1, pretrained=False)
    c = m.config
    assert (c.drop_path_ratio, c.attn_drop_ratio, c.drop_ratio, c.in_c) == (0.1, 0.2, 0.3, 1)
    seed = npvit.create_model("vit_tiny_patch16_224", depth=1, drop_path_ratio=0.1, attn_drop_ratio=0.2,
                              drop_ratio=0.3, in_c=1)
    assert seed.config == c


def test_swin_takes_timm_keywords_too():
    timm = pytest.importorskip("timm")
    kw = dict(in_chans=1, num_classes=5, embed_dim=32, depths=(1, 1), num_heads=(2, 4), img_size=64,
              window_size=4, global_pool="avg")
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **kw)
    ours = npvit.create_model("swin_tiny_patch4_window7_224", **kw)
    assert _shapes(ours.state_dict()) == _shapes(ref.state_dict())


@pytest.mark.parametrize("kw,error,match", [
    (dict(in_chans=1, in_c=1), TypeError, "in_chans .* and in_c set the same thing"),
    (dict(drop_path_rate=0.1, drop_path_ratio=0.1), TypeError, "drop_path_rate .* and drop_path_ratio"),
    (dict(attn_drop_rate=0.1, attn_drop_ratio=0.1), TypeError, "attn_drop_rate .* and attn_drop_ratio"),
    (dict(proj_drop_rate=0.1, drop_ratio=0.1), TypeError, "proj_drop_rate/pos_drop_rate .* and drop_ratio"),
    (dict(global_pool="avg", classifier="gap"), TypeError, "global_pool/class_token .* and classifier"),
    (dict(proj_drop_rate=0.1, pos_drop_rate=0.2), ValueError, "one rate for both"),
    (dict(drop_rate=0.1), ValueError, "dropout before the head, which npvit's ViT does not have"),
    (dict(global_pool="avg", class_token=True), ValueError, "'avg' has no class token"),
    (dict(global_pool="map"), ValueError, "global_pool='map' is not implemented"),
    (dict(fc_norm=True), ValueError, "fc_norm=True .* is not implemented"),
    (dict(pretrained=True), ValueError, "does not download weights"),
    (dict(reg_tokens=4), TypeError, r"unknown model setting\(s\) \['reg_tokens'\]"),
])
def test_conflicts_and_what_npvit_lacks_are_errors(kw, error, match):
    with pytest.raises(error, match=match):
        npvit.create_model("vit_tiny_patch16_224", depth=1, **kw)


def test_every_tag_matches_timm_s_pretrained_config():
    timm = pytest.importorskip("timm")
    from timm.models import get_pretrained_cfg

    for name in VARIANTS:
        timm_tags = sorted(t.split(".", 1)[1] for t in timm.list_pretrained(name + ".*"))
        assert sorted(PRETRAINED_TAGS.get(name, ())) == timm_tags, name
        for tag in timm_tags:
            ref = get_pretrained_cfg(f"{name}.{tag}")
            ours = tag_preprocess(tag, VARIANTS[name].img_size)
            assert tag_settings(tag)["num_classes"] == ref.num_classes, (name, tag)
            assert ours.input_size == tuple(ref.input_size[1:]), (name, tag)
            assert (ours.interpolation, ours.crop_mode) == (ref.interpolation, ref.crop_mode), (name, tag)
            assert ours.crop_pct == pytest.approx(ref.crop_pct), (name, tag)
            assert ours.mean == pytest.approx(ref.mean) and ours.std == pytest.approx(ref.std), (name, tag)


def test_tagged_names_build_the_variant_with_the_tag_s_recipe():
    m = npvit.create_model("vit_tiny_patch16_224.augreg_in21k", depth=1)
    assert m.config.num_classes == 21843 and m.config.embed_dim == 192
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.crop_pct == 0.9
    d = npvit.create_model("deit_tiny_patch16_224.fb_in1k", depth=1, num_classes=7, img_size=384)
    assert d.config.num_classes == 7                       # the caller's setting wins over the tag's
    assert d.preprocess.input_size == (384, 384) and d.preprocess.crop_pct == 1.0
    assert d.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert npvit.create_model("vit_tiny_patch16_224", depth=1).preprocess is None   # control: no tag
    assert split_tag("vit_tiny_patch16_224", VARIANTS) == ("vit_tiny_patch16_224", None)
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'nope' for vit_tiny_patch16_224 \(its tags: augreg_in21k, "):
        npvit.create_model("vit_tiny_patch16_224.nope")
    with pytest.raises(ValueError, match="unknown model 'vit_gigantic'"):
        npvit.create_model("vit_gigantic.augreg_in21k")


def test_version(capsys):
    from npvit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"npvit {npvit.__version__}\n"
