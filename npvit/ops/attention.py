"""Softmax and multi-head scaled dot-product attention on a fused qkv tensor.

    q, k, v = split(qkv)                      each (B*H, N, Dh)
    P = softmax(q k^T * scale)                (B*H, N, N)
    out = dropout(P) v                        (B*H, N, Dh) -> (B, N, H*Dh)

Cache: q (already scaled), k, v and the attention-dropout mask.  The probabilities P are recomputed
in the backward, block by block, rather than kept: P is (B*H, N, N), the largest activation of a
block, and recomputing it costs one small GEMM per head (PyTorch's fused attention does the same).  The qkv and output projections are ordinary linear layers in
the block.  Each (image, head) pair is independent, so the work is handed to ``backend.rowwise``
over the B*H axis as many small matrix products.
"""
from typing import Any, NamedTuple

from .dropout import dropout_mask


def softmax_forward(s, backend, inplace=False):
    """Softmax over the last axis; subtracting the row max keeps exp finite at logits of +-1000.
    ``inplace=True`` overwrites ``s`` (attention passes its fresh score array)."""
    p = s if inplace else s.copy()
    p -= s.max(axis=-1, keepdims=True)
    backend.xp.exp(p, out=p)
    p *= 1.0 / p.sum(axis=-1, keepdims=True)
    return p


def softmax_backward(dp, p):
    """ds = p * (dp - sum(dp * p)); a constant dp gives exactly zero, hence random dy in tests."""
    ds = dp * p
    ds -= p * ds.sum(axis=-1, keepdims=True)
    return ds


class AttentionCache(NamedTuple):
    q: Any           # (B*H, N, Dh), already multiplied by scale
    k: Any           # (B*H, N, Dh)
    v: Any           # (B*H, N, Dh)
    mask: Any        # (B*H, N, N) scaled keep-mask of attention dropout, or None
    scale: float
    batch_heads: tuple  # (B, H)
    backend: Any


def attention_forward(qkv, num_heads, scale, backend, attn_drop=0.0, rng=None, drop_mask=None):
    xp = backend.xp
    B, N, three_d = qkv.shape
    H, Dh = num_heads, three_d // (3 * num_heads)
    qkv = qkv.reshape(B, N, 3, H, Dh).transpose(2, 0, 3, 1, 4)              # (3, B, H, N, Dh)
    q = (qkv[0] * scale).reshape(B * H, N, Dh)
    k = xp.ascontiguousarray(qkv[1]).reshape(B * H, N, Dh)
    v = xp.ascontiguousarray(qkv[2]).reshape(B * H, N, Dh)
    out = xp.empty((B * H, N, Dh), dtype=qkv.dtype)
    # Masks are drawn here, whole, so they do not depend on how the backend splits the work.
    mask = drop_mask.reshape(B * H, N, N) if drop_mask is not None else \
        dropout_mask((B * H, N, N), attn_drop, rng, backend, qkv.dtype)

    def block(q_, k_, v_, out_, *mask_):
        probs = softmax_forward(q_ @ k_.swapaxes(-1, -2), backend, inplace=True)  # (b, N, N)
        out_[...] = (probs * mask_[0] if mask_ else probs) @ v_

    backend.rowwise(block, q, k, v, out, *(() if mask is None else (mask,)), small_gemms=True)
    out = out.reshape(B, H, N, Dh).transpose(0, 2, 1, 3).reshape(B, N, H * Dh)  # (B, N, D)
    return out, AttentionCache(q, k, v, mask, scale, (B, H), backend)


def attention_backward(dout, cache):
    """Returns dqkv (B, N, 3D)."""
    q, k, v, mask, scale, (B, H), backend = cache
    xp = backend.xp
    _, N, Dh = q.shape
    dout = xp.ascontiguousarray(dout.reshape(B, N, H, Dh).transpose(0, 2, 1, 3)).reshape(B * H, N, Dh)
    dqkv = xp.empty((3, B * H, N, Dh), dtype=dout.dtype)

    def block(q_, k_, v_, dout_, dq_, dk_, dv_, *mask_):
        probs_ = softmax_forward(q_ @ k_.swapaxes(-1, -2), backend, inplace=True)  # recomputed
        # out = dropped @ v
        dropped = probs_ * mask_[0] if mask_ else probs_
        dv_[...] = dropped.swapaxes(-1, -2) @ dout_
        dprobs = dout_ @ v_.swapaxes(-1, -2)                                   # (b, N, N)
        if mask_:
            dprobs *= mask_[0]
        # probs = softmax(q k^T), q already scaled
        ds = softmax_backward(dprobs, probs_)
        dq_[...] = (ds @ k_) * scale
        dk_[...] = ds.swapaxes(-1, -2) @ q_

    backend.rowwise(block, q, k, v, dout, dqkv[0], dqkv[1], dqkv[2],
                    *(() if mask is None else (mask,)), small_gemms=True)
    dqkv = dqkv.reshape(3, B, H, N, Dh).transpose(1, 3, 0, 2, 4)             # (B, N, 3, H, Dh)
    return dqkv.reshape(B, N, 3 * H * Dh)
