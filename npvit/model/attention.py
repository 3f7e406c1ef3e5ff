"""The attention a TransformerBlock plugs in: from the block input, through norm1 and the qkv
projection, to the attention output before the output projection.

    GlobalAttention (ViT):   qkv = norm1(h) W_qkv^T + b_qkv;  a = attention(qkv)         every token
    WindowAttention (Swin):  the same qkv, laid out in (shifted) windows; attention within each
                             window plus a relative position bias (and the shift mask); laid back

Each provides ``forward(h, params, run, queries)``, ``backward(da, cache, grads)`` and
``projection(params, run)`` (the output projection's weight and bias, which the block applies).

In a fused eval pass the qkv bias is split, exactly: its k part is dropped (it adds q_i . b_k to
every score of row i, which softmax ignores, whatever score bias is added too) and its v part is
folded into the projection's bias (each row of P sums to 1, so attention passes b_v through
unchanged and proj adds W_proj b_v).  Only the q third of the bias is then added to the qkv product.
"""
from typing import Any, NamedTuple

from ..ops.attention import (apply_probs, attention_backward, attention_forward, attention_probs,
                             attention_probs_from_cache, attention_probs_grad)
from ..ops.relpos import relative_position_index, relpos_bias_backward, relpos_bias_forward
from ..ops.sublayer import norm_linear_backward, norm_linear_forward
from ..ops.window import merge_windows_backward, merge_windows_forward, shift_mask, windows_backward, windows_forward


class Attention:
    """What both attentions share: the qkv step and the projection, with the eval-time bias folds."""

    def __init__(self, prefix, num_heads, scale, norm_eps, qkv_bias=True, attn_drop=0.0):
        self.prefix, self.num_heads, self.scale = prefix, num_heads, scale
        self.norm_eps, self.qkv_bias, self.attn_drop = norm_eps, qkv_bias, attn_drop

    def _qkv(self, h, p, run):
        """norm1 then the qkv product: (qkv, cache); in a fused pass with the q bias only."""
        b = self.prefix
        norm_w, norm_b, weight = p[b + "norm1.weight"], p[b + "norm1.bias"], p[b + "attn.qkv.weight"]
        if not run.fused:
            return norm_linear_forward(h, norm_w, norm_b, self.norm_eps, weight, p.get(b + "attn.qkv.bias"), run)
        return run.backend.layernorm_linear(h, norm_w, norm_b, self.norm_eps, weight, self._q_bias(p)), None

    def _qkv_backward(self, dqkv, cache, grads):
        b = self.prefix
        dh, grads[b + "norm1.weight"], grads[b + "norm1.bias"], grads[b + "attn.qkv.weight"], dbias = \
            norm_linear_backward(dqkv, cache)
        if self.qkv_bias:
            grads[b + "attn.qkv.bias"] = dbias
        return dh

    def _watched(self, run):
        """The pass's observer if it wants this attention's probabilities, else None."""
        obs = run.observer
        return obs if obs is not None and obs.wants_attention(self.prefix) else None

    def _attend_fused(self, q, k, v, run, bias=None):
        """The backend's attention kernel; for a watched attention the probabilities made
        explicitly, shown to the observer, then applied."""
        obs = self._watched(run)
        if obs is None:
            return run.backend.attention(q, k, v, self.num_heads, self.scale, bias)
        p = attention_probs(q, k, self.num_heads, self.scale, run.backend.xp, bias)
        obs.attention(self.prefix, p)
        return apply_probs(p, v, run.backend.xp)

    def _show_attention(self, attn, run):
        """After an op-by-op attention: the observer sees its probabilities; returns the observer
        to keep in the cache for the backward (or None)."""
        obs = self._watched(run)
        if obs is not None:
            obs.attention(self.prefix, attention_probs_from_cache(attn))
        return obs

    def _show_attention_grad(self, da, attn, obs):
        if obs is not None:
            obs.attention_grad(self.prefix, attention_probs_from_cache(attn), attention_probs_grad(da, attn))

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


class GlobalAttentionCache(NamedTuple):
    qkv: Any       # NormLinearCache: norm1 and the qkv projection
    attn: Any      # AttentionCache
    observer: Any  # shown the probabilities' gradient in the backward, or None


class GlobalAttention(Attention):
    """Multi-head self-attention over all tokens (ViT's ``blocks.i.attn``)."""

    def forward(self, h, p, run, queries=None):
        be = run.backend
        if not run.fused:
            qkv, qkv_cache = self._qkv(h, p, run)                                  # (B, N, 3D)
            a, attn = attention_forward(qkv, self.num_heads, self.scale, be, self.attn_drop, run.rng,
                                        queries=queries)
            obs = self._show_attention(attn, run)
            return a, (GlobalAttentionCache(qkv_cache, attn, obs) if run.grad else None)
        b = self.prefix
        weight = p[b + "attn.qkv.weight"]
        D = weight.shape[1]
        if queries is None:
            qkv, _ = self._qkv(h, p, run)
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        else:  # keys and values for every token, queries for the first ``queries`` rows only
            normed = be.xp.empty((h.size // D, D), h.dtype)
            kv = be.layernorm_linear(h, p[b + "norm1.weight"], p[b + "norm1.bias"], self.norm_eps,
                                     weight[D:], None, normed=normed)                 # (B, N, 2D)
            q = normed.reshape(h.shape)[:, :queries] @ weight[:D].T              # (B, queries, D)
            q_bias = self._q_bias(p)
            if q_bias is not None:
                q += q_bias
            k, v = kv[..., :D], kv[..., D:]
        return self._attend_fused(q, k, v, run), None

    def backward(self, da, cache, grads):
        qkv, attn, observer = cache     # handed over: q, k, v go before the qkv backward runs
        del cache
        self._show_attention_grad(da, attn, observer)
        dqkv, _ = attention_backward(da, attn)
        del attn
        return self._qkv_backward(dqkv, qkv, grads)


class WindowAttentionCache(NamedTuple):
    qkv: Any       # NormLinearCache
    attn: Any      # AttentionCache (its score bias: relative position bias + shift mask)
    relpos: Any    # RelPosCache
    observer: Any  # shown the probabilities' gradient in the backward, or None


class WindowAttention(Attention):
    """Swin's (shifted-)window attention with a relative position bias (``layers.i.blocks.j.attn``).

    ``layout`` (ops/window.py) fixes the grid, the window, the shift and the order of shift and pad;
    the shift mask and the relative position index are constants of the layout, made once."""

    def __init__(self, prefix, num_heads, scale, norm_eps, layout, qkv_bias=True, attn_drop=0.0):
        super().__init__(prefix, num_heads, scale, norm_eps, qkv_bias, attn_drop)
        self.layout = layout
        self._constants = {}                            # (backend name, dtype) -> (index, mask)

    def forward(self, h, p, run, queries=None):
        be, L = run.backend, self.layout
        B, N, C = h.shape
        qkv, qkv_cache = self._qkv(h, p, run)                                      # (B, N, 3C)
        # pad tokens are zero rows before the qkv product, i.e. its bias after; in a fused pass
        # their k and v are zero like every token's folded-away k and v bias (and their q unread)
        pad_value = None if run.fused else p.get(self.prefix + "attn.qkv.bias")
        windows = windows_forward(qkv.reshape(B, *L.grid, 3 * C), L, be, pad_value)  # (B, nW, n, 3C)
        bias, relpos = self._score_bias(p, run)
        attn = obs = None
        if run.fused:
            q, k, v = windows[..., :C], windows[..., C:2 * C], windows[..., 2 * C:]
            a = self._attend_fused(q, k, v, run, bias)
        else:
            a, attn = attention_forward(windows, self.num_heads, self.scale, be, self.attn_drop, run.rng,
                                        bias=bias, bias_grad=True)                  # (B, nW, n, C)
            obs = self._show_attention(attn, run)
        a = merge_windows_forward(a, L, be).reshape(B, N, C)
        return a, (WindowAttentionCache(qkv_cache, attn, relpos, obs) if run.grad else None)

    def backward(self, da, cache, grads):
        qkv, attn, relpos, observer = cache  # handed over: q, k, v go before the qkv backward runs
        del cache
        be, L = relpos.backend, self.layout
        B, N, C = da.shape
        da = merge_windows_backward(da.reshape(B, *L.grid, C), L, be)                # (B, nW, n, C)
        self._show_attention_grad(da, attn, observer)
        dwindows, dbias = attention_backward(da, attn)
        del attn
        dbias = dbias.sum(axis=0) if dbias.ndim == 4 else dbias                     # over the windows
        grads[self.prefix + "attn.relative_position_bias_table"] = relpos_bias_backward(dbias, relpos)
        dqkv, dpad = windows_backward(dwindows, L, be, with_value=self.qkv_bias)
        dh = self._qkv_backward(dqkv.reshape(B, N, 3 * C), qkv, grads)
        if dpad is not None:
            grads[self.prefix + "attn.qkv.bias"] = grads[self.prefix + "attn.qkv.bias"] + dpad
        return dh

    def _score_bias(self, p, run):
        """(bias (H, n, n) or, with a shift, (nW, H, n, n); the gather's cache)."""
        index, mask = self._layout_constants(run.backend, p[self.prefix + "norm1.weight"].dtype)
        key = self.prefix + "score bias"
        if run.fused and key in run.memo:
            return run.memo[key], None
        table = p[self.prefix + "attn.relative_position_bias_table"]
        bias, relpos = relpos_bias_forward(table, index, run.backend)
        if mask is not None:
            bias = bias + mask[:, None]                                            # (nW, H, n, n)
        if run.fused:
            run.memo[key] = bias
        return bias, relpos

    def _layout_constants(self, backend, dtype):
        key = (backend.name, str(dtype))
        if key not in self._constants:
            xp = backend.xp
            self._constants[key] = (relative_position_index(self.layout.window, xp),
                                    shift_mask(self.layout, xp, dtype))
        return self._constants[key]
