"""SwinTransformer: a hierarchy of window-attention stages, forward and a hand-written backward.

    x (B, C, H, W) -> patch embed (B, gh*gw, C0) -> [LayerNorm] -> [+ absolute_pos_embed]
      -> stage 0: depths[0] x TransformerBlock(WindowAttention)                 grid gh x gw, width C0
      -> stage i: PatchMerging (2x2 -> 1, width x2), depths[i] x TransformerBlock(WindowAttention)
      -> LayerNorm -> mean over tokens -> [dropout] -> head.fc                   (B, num_classes)

Even blocks of a stage attend within windows, odd blocks within windows shifted by half a window
(with the shift mask keeping apart tokens that the roll brought together).  The block itself is the
ViT's (``block.py``): only the attention (``attention.WindowAttention``) and patch merging
(``ops/patch_merge.py``) are Swin's own.  Parameter names are timm's (``schema.swin_parameter_shapes``).
"""
import math
from typing import Any, NamedTuple

from ..ops.dropout import dropout_backward, dropout_forward
from ..ops.layernorm import layernorm_backward, layernorm_forward
from ..ops.linear import linear_backward, linear_forward
from ..ops.patch_embed import patch_embed_backward, patch_embed_forward
from ..ops.patch_merge import patch_merge_backward, patch_merge_forward
from ..ops.window import WindowLayout
from .attention import WindowAttention
from .base import Model, _take_indices
from .block import TransformerBlock
from .config import SwinConfig


class SwinCache(NamedTuple):
    patch_embed: Any
    patch_norm: Any  # LayerNormCache or None
    stages: list     # per stage (PatchMergeCache or None, [BlockCache, ...]); the backward pops them
    norm: Any
    head: Any        # HeadCache


class HeadCache(NamedTuple):
    n_tokens: int
    drop: Any        # DropoutCache or None
    fc: Any          # LinearCache or None


class SwinTransformer(Model):
    """A Swin Transformer with timm's parameter names and a hand-written backward.

    ``forward(x)`` returns logits (B, num_classes), or pooled features when ``num_classes=0``;
    ``forward_features(x)`` the final-norm feature map (B, H, W, C), as timm's.  Build one with
    ``npvit.create_model("swin_tiny_patch4_window7_224")`` or ``npvit.load(path)``.
    """

    config_class = SwinConfig
    init_std = 0.02  # timm's
    default_preprocess = "deit"  # timm's Swin cfgs: bicubic, crop 0.9 (1.0 above 224), ImageNet mean/std
    _repr_fields = ("img_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size")
    _config_hint = "depths, embed_dim, window_size, num_classes, ..."
    _resize_hint = "(its relative position tables stay as they are)"

    def _build(self):
        cfg = self.config
        total, k = sum(cfg.depths), 0
        self.stages = []
        for i, depth in enumerate(cfg.depths):
            window, shift = cfg.stage_window(i)
            blocks = []
            for j in range(depth):
                prefix = f"layers.{i}.blocks.{j}."
                layout = WindowLayout(cfg.stage_grid(i), window, shift if j % 2 else (0, 0),
                                      pad_first=cfg.window_rule == "hf")
                attention = WindowAttention(prefix, cfg.num_heads[i], cfg.scale(i), cfg.norm_eps, layout,
                                            qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate)
                drop_path = cfg.drop_path_rate * k / (total - 1) if total > 1 else 0.0
                blocks.append(TransformerBlock(prefix, attention, cfg.norm_eps, cfg.gelu,
                                               cfg.proj_drop_rate, drop_path))
                k += 1
            self.stages.append(blocks)

    def _tokens_per_image(self):
        return self.config.num_patches

    def _rows_per_image(self):
        """Swin's products shrink 4x a stage (Swin-T: 3136 rows an image in stage 1, 49 in stage
        4), so an image counts as the mean over blocks (Swin-T: 760): a thread's groups then hold
        2-3 images, whose last stages' products run near peak rate.  Paired at batch 32 (Zen 3), a
        group of one image took 1.18-1.23x the time of groups of 2-4."""
        cfg = self.config
        rows = [math.prod(cfg.stage_grid(i)) for i in range(cfg.num_stages)]
        return max(1, round(sum(r * d for r, d in zip(rows, cfg.depths)) / sum(cfg.depths)))

    def _attention_prefixes(self):
        return [block.prefix for blocks in self.stages for block in blocks]

    # --- forward ---------------------------------------------------------------------------
    def forward_features(self, x):
        """The final-norm feature map (B, H, W, C) in eval mode, as timm's ``forward_features``."""
        h = self._eval_features(x)
        return h.reshape(h.shape[0], *self.config.stage_grid(self.config.num_stages - 1), -1)

    def forward_intermediates(self, x, indices=None, norm=False, output_fmt="NCHW", intermediates_only=False):
        """Stage outputs (the feature pyramid), as timm's ``forward_intermediates`` (eval mode):
        ``indices`` None (every stage), an int n (the last n) or a list of stage indices; each
        (B, C_i, H_i, W_i); ``norm`` applies the final LayerNorm to the last stage's only (the
        norm is sized for it).  Returns ``(final-norm feature map (B, H, W, C), intermediates)``, or
        the intermediates alone with ``intermediates_only``."""
        if output_fmt != "NCHW":
            raise ValueError(f"a Swin Transformer's intermediates are NCHW maps (as timm's), got output_fmt={output_fmt!r}")
        from .observe import Recorder

        cfg = self.config
        take = _take_indices(cfg.num_stages, indices)
        rec = Recorder(indices=take)
        final = self._eval_features(x, observer=rec)
        out = []
        for i in take:
            y = rec.outputs[i]
            if norm and i == cfg.num_stages - 1:
                y, _ = layernorm_forward(y, self.params["norm.weight"], self.params["norm.bias"], cfg.norm_eps,
                                         self.backend, keep_grad=False)
            out.append(self.backend.xp.ascontiguousarray(
                y.reshape(y.shape[0], *cfg.stage_grid(i), -1).transpose(0, 3, 1, 2)))
        final = final.reshape(final.shape[0], *cfg.stage_grid(cfg.num_stages - 1), -1)
        return out if intermediates_only else (final, out)

    def forward_head(self, features, pre_logits=False):
        """The head on a final-norm feature map (B, H, W, C) (``forward_features``' output), as
        timm's: the mean over H and W, then ``head.fc``; ``pre_logits=True`` returns the mean."""
        cfg = self.config
        h = self._check_features(features, (None, *cfg.stage_grid(cfg.num_stages - 1), cfg.num_features))
        pooled = h.mean(axis=(1, 2))
        if pre_logits or not cfg.num_classes:
            return pooled
        return linear_forward(pooled, self.params["head.fc.weight"], self.params["head.fc.bias"], self.backend)[0]

    def _forward(self, x, run):
        if run.fused:
            h, caches = self._map_images(lambda images, r: self._features(images, r)[0], x, run), None
        else:
            h, caches = self._features(x, run)
        out, head = self._head_forward(h, run)
        return out, (SwinCache(*caches, head) if run.grad else None)

    def _features(self, x, run):
        """(final-norm tokens (B, H*W, C), caches)."""
        cfg, p, be = self.config, self.params, self.backend
        h, embed = patch_embed_forward(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], be)
        patch_norm = None
        if cfg.patch_norm:
            h, patch_norm = layernorm_forward(h, p["patch_embed.norm.weight"], p["patch_embed.norm.bias"],
                                              cfg.norm_eps, be, keep_grad=run.grad)
        if cfg.ape:
            h = h + p["absolute_pos_embed"]
        stages = []
        for i, blocks in enumerate(self.stages):
            merge = None
            if i > 0:
                d = f"layers.{i}.downsample."
                h, merge = patch_merge_forward(h.reshape(h.shape[0], *cfg.stage_grid(i - 1), -1),
                                               p[d + "norm.weight"], p[d + "norm.bias"], cfg.norm_eps,
                                               p[d + "reduction.weight"], run)
                h = h.reshape(h.shape[0], -1, h.shape[-1])                         # (B, H*W, C)
            block_caches = []
            for block in blocks:
                h, c = block.forward(h, p, run)
                block_caches.append(c)
            stages.append((merge, block_caches))
            if run.observer is not None:
                run.observer.block_output(i, h)
        h, norm = layernorm_forward(h, p["norm.weight"], p["norm.bias"], cfg.norm_eps, be, keep_grad=run.grad)
        return h, (embed, patch_norm, stages, norm)

    def _head_forward(self, h, run):
        cfg, p, be = self.config, self.params, self.backend
        pooled = h.mean(axis=1)                                                    # (B, C)
        pooled, drop = dropout_forward(pooled, cfg.drop_rate, run.rng, be)
        fc = None
        if cfg.num_classes:
            pooled, fc = linear_forward(pooled, p["head.fc.weight"], p["head.fc.bias"], be)
        return pooled, HeadCache(h.shape[1], drop, fc)

    # --- backward ------------------------------------------------------------------------
    def _backward(self, dout, cache, input_grad):
        cfg, be, grads = self.config, self.backend, {}
        head = cache.head
        dpooled = self._check_grad(dout, None)
        if head.fc is not None:
            dpooled, grads["head.fc.weight"], grads["head.fc.bias"] = linear_backward(dpooled, head.fc)
        dpooled = dropout_backward(dpooled, head.drop)
        B, N = dpooled.shape[0], head.n_tokens
        dh = be.xp.broadcast_to((dpooled / N)[:, None, :], (B, N, dpooled.shape[-1])).copy()
        dh, grads["norm.weight"], grads["norm.bias"] = layernorm_backward(dh, cache.norm)
        for i in reversed(range(cfg.num_stages)):
            merge, block_caches = cache.stages.pop()
            for block in reversed(self.stages[i]):
                dh = block.backward(dh, block_caches.pop(), grads, be)
            if i > 0:
                d = f"layers.{i}.downsample."
                dh = dh.reshape(B, *cfg.stage_grid(i), -1)
                dh, grads[d + "norm.weight"], grads[d + "norm.bias"], grads[d + "reduction.weight"] = \
                    patch_merge_backward(dh, merge)
                dh = dh.reshape(B, -1, dh.shape[-1])
        if cfg.ape:
            grads["absolute_pos_embed"] = dh.sum(axis=0, keepdims=True)
        if cfg.patch_norm:
            dh, grads["patch_embed.norm.weight"], grads["patch_embed.norm.bias"] = \
                layernorm_backward(dh, cache.patch_norm)
        dx, grads["patch_embed.proj.weight"], grads["patch_embed.proj.bias"] = \
            patch_embed_backward(dh, cache.patch_embed, input_grad)
        return dx, grads
