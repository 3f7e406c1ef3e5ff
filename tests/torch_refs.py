"""Independent PyTorch reference models (timm, Hugging Face) carrying an npvit model's weights.

The name mapping here is written out in the test tree on purpose: it must not share code with the
library's own checkpoint readers, so a mistake in one cannot hide a mistake in the other.
"""
from functools import partial

import numpy as np

torch = __import__("pytest").importorskip("torch")


def _t(a, dtype):
    return torch.tensor(np.asarray(a), dtype=dtype)


def timm_model(npv, torch_dtype=torch.float64):
    """timm VisionTransformer / VisionTransformerDistilled with ``npv``'s config and weights."""
    import timm.layers
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    c = npv.config
    assert not c.representation_size, "timm's ViT has no representation layer; use hf_model"
    kwargs = dict(
        img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_c, num_classes=c.num_classes,
        embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias, norm_layer=partial(torch.nn.LayerNorm, eps=c.norm_eps),
        act_layer=timm.layers.get_act_layer("gelu_tanh" if c.gelu == "tanh" else "gelu"),
    )
    if c.classifier == "gap":
        kwargs.update(class_token=False, global_pool="avg", fc_norm=False)
    cls = VisionTransformerDistilled if c.distilled else VisionTransformer
    ref = cls(**kwargs).to(torch_dtype)
    sd = {n: _t(npv.backend.to_numpy(v), torch_dtype) for n, v in npv.params.items()}
    ref.load_state_dict(sd, strict=True)
    if c.distilled:
        ref.set_distilled_training(True)
    return ref


def timm_grads(ref):
    return {n: p.grad.numpy() for n, p in ref.named_parameters()}


def _hf_names(npv, prefix):
    """{npvit name: HF name} plus the qkv split, for ViTForImageClassification / ViTModel."""
    names = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
             "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
             "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
             "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    for i in range(npv.config.depth):
        b, h = f"blocks.{i}.", f"layers.{i}."
        for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                names[f"{b}{ours}.{kind}"] = f"{h}{theirs}.{kind}"
    return {k: prefix + v for k, v in names.items()}


class HFWithRepresentation(torch.nn.Module):
    """ViTModel's pooler (dense + tanh on the class token) followed by a linear head: the
    representation-layer model (``pre_logits``) written with Hugging Face parts."""

    def __init__(self, vit, num_classes, rep):
        super().__init__()
        self.vit, self.head = vit, torch.nn.Linear(rep, num_classes)

    def forward(self, pixel_values):
        return self.head(self.vit(pixel_values=pixel_values).pooler_output)


def hf_model(npv, torch_dtype=torch.float64):
    """Hugging Face ViT with ``npv``'s weights: ViTForImageClassification, or ViTModel + pooler +
    linear head when the model has a representation layer."""
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    c = npv.config
    assert c.classifier == "token" and not c.distilled and c.img_size[0] == c.img_size[1]
    hc = ViTConfig(hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                   intermediate_size=c.mlp_hidden, image_size=c.img_size[0], patch_size=c.patch_size[0],
                   num_channels=c.in_c, num_labels=max(c.num_classes, 1), layer_norm_eps=c.norm_eps,
                   qkv_bias=c.qkv_bias, hidden_act="gelu_pytorch_tanh" if c.gelu == "tanh" else "gelu",
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_output_size=c.representation_size,
                   pooler_act="tanh")
    host = {n: npv.backend.to_numpy(v) for n, v in npv.params.items()}
    if c.representation_size:
        ref = HFWithRepresentation(ViTModel(hc, add_pooling_layer=True), c.num_classes, c.representation_size)
        mapping = _hf_names(npv, "vit.")
        mapping.update({"pre_logits.fc.weight": "vit.pooler.dense.weight", "pre_logits.fc.bias": "vit.pooler.dense.bias",
                        "head.weight": "head.weight", "head.bias": "head.bias"})
    else:
        ref = ViTForImageClassification(hc)
        mapping = _hf_names(npv, "vit.")
        mapping.update({"head.weight": "classifier.weight", "head.bias": "classifier.bias"})
    sd = {theirs: host[ours] for ours, theirs in mapping.items()}
    for i in range(c.depth):
        q, k, v = np.split(host[f"blocks.{i}.attn.qkv.weight"], 3)
        for part, w in zip("qkv", (q, k, v)):
            sd[f"vit.layers.{i}.attention.{part}_proj.weight"] = w
        if c.qkv_bias:
            for part, bias in zip("qkv", np.split(host[f"blocks.{i}.attn.qkv.bias"], 3)):
                sd[f"vit.layers.{i}.attention.{part}_proj.bias"] = bias
    ref = ref.to(torch_dtype)
    ref.load_state_dict({k: _t(v, torch_dtype) for k, v in sd.items()}, strict=True)
    ref.npvit_mapping = mapping
    return ref


def hf_grads(ref, npv):
    """HF parameter gradients renamed to npvit names (q/k/v gradients concatenated into qkv)."""
    g = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    out = {ours: g[theirs] for ours, theirs in ref.npvit_mapping.items()}
    for i in range(npv.config.depth):
        a = f"vit.layers.{i}.attention."
        out[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([g[a + f"{p}_proj.weight"] for p in "qkv"])
        if npv.config.qkv_bias:
            out[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([g[a + f"{p}_proj.bias"] for p in "qkv"])
    return out


# --- Swin ------------------------------------------------------------------------------------------
def timm_swin(npv, torch_dtype=torch.float64):
    """timm's SwinTransformer with ``npv``'s config and weights (timm's names are npvit's)."""
    from timm.models.swin_transformer import SwinTransformer

    c = npv.config
    assert c.window_rule == "timm" and not c.ape
    ref = SwinTransformer(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_c, num_classes=c.num_classes,
                          embed_dim=c.embed_dim, depths=c.depths, num_heads=c.num_heads, window_size=c.window_size,
                          mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, drop_rate=0.0, proj_drop_rate=0.0,
                          attn_drop_rate=0.0, drop_path_rate=0.0,
                          norm_layer=partial(torch.nn.LayerNorm, eps=c.norm_eps)).to(torch_dtype)
    ref.load_state_dict({n: _t(npv.backend.to_numpy(v), torch_dtype) for n, v in npv.params.items()}, strict=True)
    return ref


def _hf_swin_names(c):
    """{npvit name: Hugging Face module name} for SwinForImageClassification (qkv split apart)."""
    names = {"patch_embed.proj.weight": "swin.embeddings.patch_embeddings.projection.weight",
             "patch_embed.proj.bias": "swin.embeddings.patch_embeddings.projection.bias",
             "patch_embed.norm.weight": "swin.embeddings.norm.weight",
             "patch_embed.norm.bias": "swin.embeddings.norm.bias",
             "norm.weight": "swin.layernorm.weight", "norm.bias": "swin.layernorm.bias",
             "head.fc.weight": "classifier.weight", "head.fc.bias": "classifier.bias"}
    if c.ape:
        names["absolute_pos_embed"] = "swin.embeddings.position_embeddings"
    for i, depth in enumerate(c.depths):
        if i > 0:  # timm merges at the start of stage i, Hugging Face at the end of stage i - 1
            for part in ("norm.weight", "norm.bias", "reduction.weight"):
                names[f"layers.{i}.downsample.{part}"] = f"swin.encoder.layers.{i - 1}.downsample.{part}"
        for j in range(depth):
            b, h = f"layers.{i}.blocks.{j}.", f"swin.encoder.layers.{i}.blocks.{j}."
            names[b + "attn.relative_position_bias_table"] = \
                h + "attention.relative_position_bias.relative_position_bias_table"
            for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                                 ("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                for kind in ("weight", "bias"):
                    names[f"{b}{ours}.{kind}"] = f"{h}{theirs}.{kind}"
    return names


def hf_swin(npv, torch_dtype=torch.float64):
    """Hugging Face's SwinForImageClassification with ``npv``'s config (window_rule='hf') and weights."""
    from transformers import SwinConfig, SwinForImageClassification

    c = npv.config
    assert c.window_rule == "hf" and c.patch_norm and c.num_classes
    hc = SwinConfig(image_size=c.img_size, patch_size=c.patch_size, num_channels=c.in_c, embed_dim=c.embed_dim,
                    depths=list(c.depths), num_heads=list(c.num_heads), window_size=c.window_size,
                    mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, drop_path_rate=0.0, hidden_act="gelu",
                    use_absolute_embeddings=c.ape, layer_norm_eps=c.norm_eps, num_labels=c.num_classes)
    ref = SwinForImageClassification(hc)
    host = {n: npv.backend.to_numpy(v) for n, v in npv.params.items()}
    mapping = _hf_swin_names(c)
    sd = {theirs: host[ours] for ours, theirs in mapping.items()}
    for i, depth in enumerate(c.depths):
        for j in range(depth):
            ours, theirs = f"layers.{i}.blocks.{j}.attn.qkv.", f"swin.encoder.layers.{i}.blocks.{j}.attention."
            for kind in ("weight", "bias") if c.qkv_bias else ("weight",):
                for part, w in zip("qkv", np.split(host[ours + kind], 3)):
                    sd[f"{theirs}{part}_proj.{kind}"] = w
    ref = ref.to(torch_dtype)
    missing, unexpected = ref.load_state_dict({k: _t(v, torch_dtype) for k, v in sd.items()}, strict=False)
    assert not unexpected and all("relative_position_index" in k for k in missing), (missing, unexpected)
    ref.npvit_mapping = mapping
    return ref


def hf_swin_grads(ref, npv):
    g = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    out = {ours: g[theirs] for ours, theirs in ref.npvit_mapping.items()}
    c = npv.config
    for i, depth in enumerate(c.depths):
        for j in range(depth):
            a = f"swin.encoder.layers.{i}.blocks.{j}.attention."
            for kind in ("weight", "bias") if c.qkv_bias else ("weight",):
                out[f"layers.{i}.blocks.{j}.attn.qkv.{kind}"] = np.concatenate([g[a + f"{p}_proj.{kind}"] for p in "qkv"])
    return out
