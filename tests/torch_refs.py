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
