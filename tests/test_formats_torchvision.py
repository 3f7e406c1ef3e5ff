"""torchvision VisionTransformer state dicts (torch.save) against torchvision, on real photos."""
import pytest

import npvit
from formats_refs import assert_close, photos, randomize, run_torch

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision.models.vision_transformer")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rep", [None, 48])
def test_torchvision_state_dict(tmp_path, rep, dtype):
    ref = randomize(tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                                         mlp_dim=128, num_classes=10, representation_size=rep), seed=30)
    path = tmp_path / "vit_tv.pth"
    torch.save(ref.state_dict(), path)
    m = npvit.load(path, num_heads=4, dtype=dtype)
    assert m.config.representation_size == rep and m.config.norm_eps == 1e-6
    assert m.preprocess.crop_pct == 0.875 and m.preprocess.mean == (0.485, 0.456, 0.406)
    x = photos(32, dtype)
    assert_close(m(x), run_torch(ref, x), dtype)


def test_standard_width_heads(tmp_path):
    ref = randomize(tv.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=3, hidden_dim=192,
                                         mlp_dim=384, num_classes=4), seed=31)
    path = tmp_path / "ti.pth"
    torch.save(ref.state_dict(), path)
    m = npvit.load(path, dtype="float64")
    assert m.config.num_heads == 3
    x = photos(32, "float64")
    assert_close(m(x), run_torch(ref, x), "float64")
