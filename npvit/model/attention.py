"""The attention a TransformerBlock plugs in: from the block input, through norm1 and the qkv
projection, to the attention output before the output projection.

    GlobalAttention (ViT):   qkv = norm1(h) W_qkv^T + b_qkv;  a = attention(qkv)   (every token)

Each provides ``forward(h, params, run, queries)``, ``backward(da, cache, grads)`` and
``projection(params, run)`` (the output projection's weight and bias, which the block applies).

In a fused eval pass the qkv bias is split, exactly: its k part is dropped (it adds q_i . b_k to
every score of row i, which softmax ignores) and its v part is folded into the projection's bias
(each row of P sums to 1, so attention passes b_v through unchanged and proj adds W_proj b_v).
Only the q third of the bias is then added to the qkv product.
"""
from typing import Any, NamedTuple

from ..ops.attention import attention_backward, attention_forward
from ..ops.sublayer import norm_linear_backward, norm_linear_forward


class GlobalAttentionCache(NamedTuple):
    qkv: Any     # NormLinearCache: norm1 and the qkv projection
    attn: Any    # AttentionCache


class GlobalAttention:
    """Multi-head self-attention over all tokens (ViT's ``blocks.i.attn``)."""

    def __init__(self, prefix, num_heads, scale, norm_eps, qkv_bias=True, attn_drop=0.0):
        self.prefix, self.num_heads, self.scale = prefix, num_heads, scale
        self.norm_eps, self.qkv_bias, self.attn_drop = norm_eps, qkv_bias, attn_drop

    def forward(self, h, p, run, queries=None):
        b, be = self.prefix, run.backend
        norm_w, norm_b, weight = p[b + "norm1.weight"], p[b + "norm1.bias"], p[b + "attn.qkv.weight"]
        if not run.fused:
            qkv, qkv_cache = norm_linear_forward(h, norm_w, norm_b, self.norm_eps, weight,
                                                 p.get(b + "attn.qkv.bias"), run)     # (B, N, 3D)
            a, attn = attention_forward(qkv, self.num_heads, self.scale, be, self.attn_drop, run.rng)
            return a, (GlobalAttentionCache(qkv_cache, attn) if run.grad else None)
        D = weight.shape[1]
        q_bias = self._q_bias(p)
        if queries is None:
            qkv = be.layernorm_linear(h, norm_w, norm_b, self.norm_eps, weight, q_bias)
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        else:  # keys and values for every token, queries for the first ``queries`` rows only
            normed = be.xp.empty((h.size // D, D), h.dtype)
            kv = be.layernorm_linear(h, norm_w, norm_b, self.norm_eps, weight[D:], None, normed=normed)
            q = normed.reshape(h.shape)[:, :queries] @ weight[:D].T              # (B, queries, D)
            if q_bias is not None:
                q += q_bias
            k, v = kv[..., :D], kv[..., D:]
        return be.attention(q, k, v, self.num_heads, self.scale), None

    def backward(self, da, cache, grads):
        b = self.prefix
        dqkv, _ = attention_backward(da, cache.attn)
        dh, grads[b + "norm1.weight"], grads[b + "norm1.bias"], grads[b + "attn.qkv.weight"], dbias = \
            norm_linear_backward(dqkv, cache.qkv)
        if self.qkv_bias:
            grads[b + "attn.qkv.bias"] = dbias
        return dh

    def projection(self, p, run):
        """(weight, bias) of the output projection; in a fused pass the bias carries W_proj b_v."""
        b = self.prefix
        weight, bias = p[b + "attn.proj.weight"], p[b + "attn.proj.bias"]
        qkv_bias = p.get(b + "attn.qkv.bias")
        if not run.fused or qkv_bias is None:
            return weight, bias
        key = b + "attn.proj.bias+v"                   # once per forward, shared by its threads
        if key not in run.memo:
            run.memo[key] = bias + weight @ qkv_bias[2 * weight.shape[1]:]
        return weight, run.memo[key]

    def _q_bias(self, p):
        qkv_bias = p.get(self.prefix + "attn.qkv.bias")
        return None if qkv_bias is None else qkv_bias[:p[self.prefix + "attn.qkv.weight"].shape[1]]
