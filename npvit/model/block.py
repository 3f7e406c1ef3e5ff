"""The pre-norm transformer block that ViT and Swin share, forward and backward.

    h = h + drop_path(dropout(proj(attention(norm1(h)))))           the attention sublayer
    h = h + drop_path(dropout(fc2(dropout(gelu(fc1(norm2(h)))))))   the MLP sublayer

The attention is pluggable (``model/attention.py``): it maps the block input to the attention
output before the projection, norm1 included -- global for ViT, shifted windows with a relative
position bias for Swin.  The projection, the MLP, dropout, drop path and the residual adds are
written once, here, as the two sublayer steps of ``ops/sublayer.py``; in a fused eval pass each
step is one backend kernel, so every architecture built on this block gets the fast path.
"""
from typing import Any, NamedTuple

from ..ops.residual import residual_backward
from ..ops.sublayer import (linear_residual_backward, linear_residual_forward, norm_linear_backward,
                            norm_linear_forward)


class BlockCache(NamedTuple):
    attn: Any        # the attention's own cache (norm1, qkv, scores)
    proj: Any        # LinearResidualCache: proj, dropout, drop path, residual
    fc1: Any         # NormLinearCache: norm2, fc1, GELU, dropout
    fc2: Any         # LinearResidualCache: fc2, dropout, drop path, residual


class TransformerBlock:
    """One block, reading its parameters from a model's dict under ``prefix`` (``blocks.3.``)."""

    def __init__(self, prefix, attention, norm_eps, gelu, drop=0.0, drop_path=0.0):
        self.prefix, self.attention = prefix, attention
        self.norm_eps, self.gelu = norm_eps, gelu
        self.drop, self.drop_path = drop, drop_path

    def forward(self, h, params, run, queries=None):
        """(h', cache) for the residual stream h (B, ..., D); h is updated in place.

        ``queries``: the output keeps only the first ``queries`` token rows, and the block computes
        keys and values for every token but nothing else for the rest (a class-token head reads
        nothing else of the last block, so the gradients are the same)."""
        p, b = params, self.prefix
        a, attn = self.attention.forward(h, p, run, queries)
        if queries is not None:
            h = h[:, :queries].copy()
        proj_weight, proj_bias = self.attention.projection(p, run)
        h, proj = linear_residual_forward(a, proj_weight, proj_bias, h, run, self.drop, self.drop_path)
        m, fc1 = norm_linear_forward(h, p[b + "norm2.weight"], p[b + "norm2.bias"], self.norm_eps,
                                     p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"], run,
                                     act=self.gelu, drop=self.drop)             # (B, ..., hidden)
        h, fc2 = linear_residual_forward(m, p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"], h, run,
                                         self.drop, self.drop_path)
        return h, (BlockCache(attn, proj, fc1, fc2) if run.grad else None)

    def backward(self, dh, cache, grads, backend):
        """Gradient of the block input from that of its output; parameter gradients into ``grads``."""
        b = self.prefix
        # Each sublayer's cache is handed over (popped), so its activations are freed as soon as
        # its backward is done: the backward's peak memory holds one sublayer's, not the block's.
        caches = list(cache)                                # [attn, proj, fc1, fc2]
        del cache
        # MLP sublayer
        dm, grads[b + "mlp.fc2.weight"], grads[b + "mlp.fc2.bias"] = linear_residual_backward(dh, caches.pop())
        dm, grads[b + "norm2.weight"], grads[b + "norm2.bias"], grads[b + "mlp.fc1.weight"], \
            grads[b + "mlp.fc1.bias"] = norm_linear_backward(dm, caches.pop())
        dh = residual_backward(dh, dm, backend)
        # attention sublayer
        da, grads[b + "attn.proj.weight"], grads[b + "attn.proj.bias"] = linear_residual_backward(dh, caches.pop())
        return residual_backward(dh, self.attention.backward(da, caches.pop(), grads), backend)
