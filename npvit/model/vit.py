"""VisionTransformer: patch embedding, a stack of pre-norm transformer blocks, a head.

    x (B, C, H, W) -> patch embed (B, P, D) -> [cls, dist] + pos_embed -> dropout
      -> depth x TransformerBlock(GlobalAttention) -> LayerNorm -> pool (token 0, or mean for 'gap')
      -> [pre_logits: Linear + tanh] -> head Linear          (B, num_classes)

Parameters and their names: ``schema.vit_parameter_shapes``; the block: ``block.py``; everything
generic (loading, saving, checks, forward/backward bookkeeping): ``base.Model``.  A fused eval pass
runs the features image by image on the backend's threads (``Model._map_images``), and with a
class-token head the last block computes the prefix rows only.
"""
from typing import Any, NamedTuple

from ..ops.activations import tanh_backward, tanh_forward
from ..ops.dropout import dropout_backward, dropout_forward
from ..ops.layernorm import layernorm_backward, layernorm_forward
from ..ops.linear import linear_backward, linear_forward
from ..ops.patch_embed import patch_embed_backward, patch_embed_forward
from ..ops.tokens import tokens_backward, tokens_forward
from .attention import GlobalAttention
from .base import Model, _take_indices
from .block import TransformerBlock
from .config import ViTConfig


class ViTCache(NamedTuple):
    patch_embed: Any
    tokens: Any
    pos_drop: Any
    blocks: list     # one BlockCache per block; the backward pops them, freeing each once used
    norm: Any
    head: Any        # HeadCache


class HeadCache(NamedTuple):
    n_tokens: int    # tokens the features had (the shape of their gradient)
    pair: bool       # a distilled model in training returned (logits, logits_dist)
    pre_logits: Any  # LinearCache or None
    act: Any         # TanhCache or None
    head: Any        # LinearCache or None
    head_dist: Any   # LinearCache or None


class VisionTransformer(Model):
    """A Vision Transformer (ViT, DeiT) with PyTorch's parameter names and a hand-written backward.

    ``forward(x)`` returns logits (B, num_classes), or pooled features when ``num_classes=0``; a
    distilled model returns the mean of its two heads, or the pair ``(logits, logits_dist)`` in
    training.  Build one with ``npvit.create_model(name)`` or ``npvit.load(path)``.
    """

    config_class = ViTConfig
    init_std = 0.01  # the seed's
    _repr_fields = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")

    def _build(self):
        cfg = self.config
        self.blocks = [
            TransformerBlock(f"blocks.{i}.",
                             GlobalAttention(f"blocks.{i}.", cfg.num_heads, cfg.scale, cfg.norm_eps,
                                             qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_ratio),
                             cfg.norm_eps, cfg.gelu, cfg.drop_ratio, self._drop_path_rate(i))
            for i in range(cfg.depth)]

    def _drop_path_rate(self, i):
        """Stochastic depth grows linearly from 0 (first block) to drop_path_ratio (last)."""
        depth = self.config.depth
        return self.config.drop_path_ratio * i / (depth - 1) if depth > 1 else 0.0

    def _tokens_per_image(self):
        return self.config.num_patches + self.config.num_prefix_tokens

    def _attention_prefixes(self):
        return [block.prefix for block in self.blocks]

    # --- forward ---------------------------------------------------------------------------
    def forward_features(self, x):
        """Final-norm token features (B, N, D) in eval mode (no head, no pooling)."""
        return self._eval_features(x)

    def forward_intermediates(self, x, indices=None, norm=False, output_fmt="NCHW", intermediates_only=False,
                              return_prefix_tokens=False):
        """Block outputs, as timm's ``forward_intermediates`` (eval mode).

        ``indices``: None (every block), an int n (the last n blocks) or a list of block indices
        (negative from the end).  ``norm``: apply the final LayerNorm to each.  The prefix tokens
        (class, distillation) are split off: ``output_fmt="NCHW"`` gives (B, D, gh, gw) patch
        maps, ``"NLC"`` (B, gh*gw, D) patch tokens; ``return_prefix_tokens`` pairs each with its
        (B, prefix, D) tokens.  Returns ``(final-norm features (B, N, D), intermediates)``, or the
        intermediates alone with ``intermediates_only``."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        from .observe import Recorder

        cfg = self.config
        take = _take_indices(cfg.depth, indices)
        rec = Recorder(indices=take)
        final = self._eval_features(x, observer=rec)
        P, (gh, gw) = cfg.num_prefix_tokens, cfg.grid_size
        out = []
        for i in take:
            y = rec.outputs[i]
            if norm:
                y, _ = layernorm_forward(y, self.params["norm.weight"], self.params["norm.bias"], cfg.norm_eps,
                                         self.backend, keep_grad=False)
            spatial = y[:, P:]
            if output_fmt == "NCHW":
                spatial = self.backend.xp.ascontiguousarray(
                    spatial.reshape(y.shape[0], gh, gw, -1).transpose(0, 3, 1, 2))
            out.append((spatial, y[:, :P]) if return_prefix_tokens and P else spatial)
        return out if intermediates_only else (final, out)

    def forward_head(self, features, pre_logits=False):
        """The head on final-norm token features (B, N, D) (``forward_features``' output), as
        timm's: the class token (or, for ``gap`` models, the mean of all tokens), the
        representation layer if any, then the classifier.  ``pre_logits=True`` returns the vector
        the classifier reads.  A distilled model averages its two heads (or, with ``pre_logits``,
        the class and distillation tokens)."""
        cfg, p, be = self.config, self.params, self.backend
        h = self._check_features(features, (None, self._tokens_per_image(), cfg.embed_dim))
        if cfg.distilled:
            if pre_logits:
                return (h[:, 0] + h[:, 1]) / 2
            return (linear_forward(h[:, 0], p["head.weight"], p["head.bias"], be)[0]
                    + linear_forward(h[:, 1], p["head_dist.weight"], p["head_dist.bias"], be)[0]) / 2
        pooled = h[:, 0] if cfg.classifier == "token" else h.mean(axis=1)
        if cfg.representation_size:
            pooled = tanh_forward(linear_forward(pooled, p["pre_logits.fc.weight"], p["pre_logits.fc.bias"], be)[0], be)[0]
        if pre_logits or not cfg.num_classes:
            return pooled
        return linear_forward(pooled, p["head.weight"], p["head.bias"], be)[0]

    def _forward(self, x, run):
        # A token-pooling head reads only the prefix tokens (class, distillation): the last block
        # then computes those rows alone, in training too (nothing else of it reaches the loss,
        # so every gradient is the same); not when an observer looks at every row.
        prefix_only = self.config.classifier == "token" and run.observer is None
        if run.fused:
            h, caches = self._map_images(lambda images, r: self._features(images, r, prefix_only)[0], x, run), None
        else:
            h, caches = self._features(x, run, prefix_only)
        out, head = self._head_forward(h, run)
        return out, (ViTCache(*caches, head) if run.grad else None)

    def _features(self, x, run, prefix_only=False):
        """(token features (B, N, D), caches); with ``prefix_only`` the features of the prefix
        tokens alone, (B, P, D)."""
        cfg, p, be = self.config, self.params, self.backend
        h, embed = patch_embed_forward(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], be)
        h, tokens = tokens_forward(h, p.get("cls_token"), p.get("dist_token"), p["pos_embed"], be)  # (B, N, D)
        h, pos_drop = dropout_forward(h, cfg.drop_ratio, run.rng, be)
        blocks = []
        for i, block in enumerate(self.blocks):
            last_prefix = prefix_only and i == len(self.blocks) - 1
            h, c = block.forward(h, p, run, queries=cfg.num_prefix_tokens if last_prefix else None)
            blocks.append(c)
            if run.observer is not None:
                run.observer.block_output(i, h)
        h, norm = layernorm_forward(h, p["norm.weight"], p["norm.bias"], cfg.norm_eps, be, keep_grad=run.grad)
        return h, (embed, tokens, pos_drop, blocks, norm)

    def _head_forward(self, h, run):
        cfg, p, be = self.config, self.params, self.backend
        if cfg.distilled:
            logits, head = linear_forward(h[:, 0], p["head.weight"], p["head.bias"], be)
            logits_dist, head_dist = linear_forward(h[:, 1], p["head_dist.weight"], p["head_dist.bias"], be)
            out = (logits, logits_dist) if run.train else (logits + logits_dist) / 2
            return out, HeadCache(h.shape[1], run.train, None, None, head, head_dist)
        pooled = h[:, 0] if cfg.classifier == "token" else h.mean(axis=1)   # (B, D)
        pre = act = head = None
        if cfg.representation_size:
            pooled, pre = linear_forward(pooled, p["pre_logits.fc.weight"], p["pre_logits.fc.bias"], be)
            pooled, act = tanh_forward(pooled, be)
        if cfg.num_classes:
            pooled, head = linear_forward(pooled, p["head.weight"], p["head.bias"], be)
        return pooled, HeadCache(h.shape[1], False, pre, act, head, None)

    # --- backward ------------------------------------------------------------------------
    def _backward(self, dout, cache, input_grad):
        be, grads = self.backend, {}
        dh = self._head_backward(dout, cache.head, grads)
        dh, grads["norm.weight"], grads["norm.bias"] = layernorm_backward(dh, cache.norm)
        for block in reversed(self.blocks):
            dh = block.backward(dh, cache.blocks.pop(), grads, be)
        dh = dropout_backward(dh, cache.pos_drop)
        dh, dcls, ddist, grads["pos_embed"] = tokens_backward(dh, cache.tokens)
        if dcls is not None:
            grads["cls_token"] = dcls
        if ddist is not None:
            grads["dist_token"] = ddist
        dx, grads["patch_embed.proj.weight"], grads["patch_embed.proj.bias"] = \
            patch_embed_backward(dh, cache.patch_embed, input_grad)
        return dx, grads

    def _head_backward(self, dout, head, grads):
        """Gradient of the token features (B, N, D) from the gradient of the output."""
        cfg, xp = self.config, self.backend.xp
        if cfg.distilled:
            B, D = head.head.x.shape
            if head.pair:
                if not (isinstance(dout, (tuple, list)) and len(dout) == 2):
                    raise ValueError("a distilled model in training returned (logits, logits_dist): "
                                     "pass a pair (dlogits, dlogits_dist) to backward")
                dhead, ddist = (self._check_grad(g, (B, cfg.num_classes)) for g in dout)
            else:
                dhead = ddist = self._check_grad(dout, (B, cfg.num_classes)) / 2  # eval output was the mean
            d0, grads["head.weight"], grads["head.bias"] = linear_backward(dhead, head.head)
            d1, grads["head_dist.weight"], grads["head_dist.bias"] = linear_backward(ddist, head.head_dist)
            dh = xp.zeros((B, head.n_tokens, D), dtype=d0.dtype)
            dh[:, 0] = d0
            dh[:, 1] = d1
            return dh
        dpooled = self._check_grad(dout, None)
        if head.head is not None:
            dpooled, grads["head.weight"], grads["head.bias"] = linear_backward(dpooled, head.head)
        if head.act is not None:
            dpooled = tanh_backward(dpooled, head.act)
            dpooled, grads["pre_logits.fc.weight"], grads["pre_logits.fc.bias"] = \
                linear_backward(dpooled, head.pre_logits)
        B, D, N = dpooled.shape[0], cfg.embed_dim, head.n_tokens
        if cfg.classifier == "token":
            dh = xp.zeros((B, N, D), dtype=dpooled.dtype)
            dh[:, 0] = dpooled
        else:
            dh = xp.broadcast_to((dpooled / N)[:, None, :], (B, N, D)).copy()
        return dh
