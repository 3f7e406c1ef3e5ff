"""Softmax and multi-head scaled dot-product attention on a fused qkv tensor.

    q, k, v = split(qkv)                      each (B, H, N, Dh)
    P = softmax(q k^T * scale)                (B, H, N, N)
    out = dropout(P) v                        (B, H, N, Dh) -> (B, N, H*Dh)

Cache: q, k, v, the probabilities P (not the logits: the softmax backward needs only P) and the
attention-dropout mask.  The qkv and output projections are ordinary linear layers in the block.
"""
from typing import Any, NamedTuple

from .dropout import dropout_backward, dropout_forward


def softmax_forward(s, xp):
    """Softmax over the last axis; subtracting the row max keeps exp finite at logits of +-1000."""
    p = s - s.max(axis=-1, keepdims=True)
    xp.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def softmax_backward(dp, p):
    """ds = p * (dp - sum(dp * p)); a constant dp gives exactly zero, hence random dy in tests."""
    ds = dp * p
    ds -= p * ds.sum(axis=-1, keepdims=True)
    return ds


class AttentionCache(NamedTuple):
    q: Any           # (B, H, N, Dh), already multiplied by scale
    k: Any           # (B, H, N, Dh)
    v: Any           # (B, H, N, Dh)
    probs: Any       # (B, H, N, N), before attention dropout
    drop: Any        # dropout cache for the probabilities (None when no dropout ran)
    scale: float
    xp: Any


def attention_forward(qkv, num_heads, scale, xp, attn_drop=0.0, rng=None, drop_mask=None):
    B, N, three_d = qkv.shape
    head_dim = three_d // (3 * num_heads)
    qkv = qkv.reshape(B, N, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
    q, k, v = qkv[0] * scale, qkv[1], qkv[2]
    probs = softmax_forward(q @ k.swapaxes(-1, -2), xp)           # (B, H, N, N)
    dropped, drop = dropout_forward(probs, attn_drop, rng, xp, mask=drop_mask)
    out = dropped @ v                                              # (B, H, N, Dh)
    out = out.transpose(0, 2, 1, 3).reshape(B, N, num_heads * head_dim)  # (B, N, D)
    return out, AttentionCache(q, k, v, probs, drop, scale, xp)


def attention_backward(dout, cache):
    """Returns dqkv (B, N, 3D)."""
    q, k, v, probs, drop, scale, xp = cache
    B, H, N, Dh = q.shape
    dout = dout.reshape(B, N, H, Dh).transpose(0, 2, 1, 3)        # (B, H, N, Dh)
    # out = dropped @ v
    dropped = probs if drop is None else probs * drop.mask
    dv = dropped.swapaxes(-1, -2) @ dout
    ddropped = dout @ v.swapaxes(-1, -2)                           # (B, H, N, N)
    dprobs = ddropped if drop is None else dropout_backward(ddropped, drop)
    # probs = softmax(q k^T), q already scaled
    ds = softmax_backward(dprobs, probs)
    dq = (ds @ k) * scale
    dk = ds.swapaxes(-1, -2) @ q
    dqkv = xp.stack([dq, dk, dv])                                  # (3, B, H, N, Dh)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, N, 3 * H * Dh)
