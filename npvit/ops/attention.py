"""Multi-head scaled dot-product attention on a fused qkv tensor, with an optional additive score bias.

    q, k, v = split(qkv)              each (G, N, Dh), G = items x heads; q already times scale * log2(e)
    S = q k^T + log2(e) bias          (G, N, N) scores in base 2; bias broadcastable to (..., H, N, N)
    E = 2^(S - m)                     m the row max (so 2^ stays finite)
    P = E / l,  l = sum_j E           the attention probabilities
    out = dropout(P) v = (E~ v) / l   E~ = E * dropout mask

``qkv`` may have any leading axes: (B, N, 3D) for ViT; (B, windows, N, 3D) for Swin, whose bias
(windows, H, N, N) -- relative position bias plus the shifted-window mask -- then broadcasts over
the batch.  The scores are kept in base 2 (q carries log2 e, so 2^(q k^T) = e^(scale q k^T)): the
same softmax, through exp2, which in NumPy is faster than exp and as exact (0.28 vs 0.49 ns per
float32 element, 1 ulp vs 2.4, with AVX-512; where exp2 is slow, ``backend.exp2`` takes exp).

Normalising after the product with v divides an (N, Dh) result instead of the (N, N) matrix.
Cache: q, k, v, the row max m and 1/l, the dropout mask, the output, and how the bias maps onto
the heads.  P is recomputed in the backward rather than kept: it is the largest activation of a
block, and recomputing it costs one small GEMM per head (PyTorch's fused CPU attention does the
same).  The backward uses sum_j P_ij dP_ij = dout_i . out_i (FlashAttention's identity, true with
dropout too), so no (N, N) reduction is needed there.  The score bias's gradient is dS = P (dP - D),
summed over the axes the bias was broadcast along; it is returned when the bias is a parameter
(Swin's relative position table), and skipped for a constant mask.  The qkv and output
projections are ordinary linear layers in the block.  Each (item, head) pair is independent, so
the work goes through ``backend.rowwise`` over the G axis, in cache-sized blocks of heads.

``attend`` is the math of one block of heads; the op below, and the backends' eval kernel
``Backend.attention``, all run it.
"""
import math
from typing import Any, NamedTuple

from .dropout import dropout_mask

LOG2E = 1.0 / math.log(2.0)


def attend(q, k, v, backend, bias=None, out=None, row_max=None, inv_sum=None, mask=None):
    """out = dropout(softmax(q k^T + bias)) v for a stack of heads, softmax in base 2.

    q (..., Nq, Dh) already times scale * log2(e); k, v (..., N, Dh); ``bias`` broadcastable to
    (..., Nq, N), already times log2(e).  ``out`` (..., Nq, Dh) may be a strided view.
    ``row_max`` / ``inv_sum`` (..., Nq, 1), when given, receive m and 1/l for a backward;
    ``mask`` is an attention-dropout keep-mask (..., Nq, N) scaled by 1/(1-p)."""
    xp = backend.xp
    e = xp.matmul(q, xp.swapaxes(k, -1, -2))                                 # scores (..., Nq, N)
    if bias is not None:
        e += bias
    m = xp.max(e, axis=-1, keepdims=True, out=row_max)
    e -= m
    backend.exp2(e, out=e)                                                   # E
    r = xp.matmul(e, xp.ones((e.shape[-1], 1), dtype=e.dtype), out=inv_sum)  # row sums (a GEMV)
    xp.reciprocal(r, out=r)                                                  # 1 / l
    if mask is not None:
        e *= mask
    if out is None:
        return xp.matmul(e, v) * r
    xp.multiply(xp.matmul(e, v), r, out=out)
    return out


class ScoreBias(NamedTuple):
    """An additive score bias laid out for a flat stack of heads: head g adds ``items[index[g]]``."""
    items: Any       # (Gb, Nq, N) the bias's distinct (Nq, N) matrices, times log2(e)
    index: Any       # (G,) integers: which of them each head adds
    shape: tuple     # the bias as given (its gradient is returned in this shape)
    lead: tuple      # leading axes of (..., H, Nq, N) the bias was broadcast to


def score_bias(bias, lead, num_heads, Nq, N, xp, dtype):
    """Map ``bias`` (broadcastable to (*lead, H, Nq, N)) onto the G = prod(lead) * H heads without
    materialising the broadcast: an index per head into the bias's own (Nq, N) matrices."""
    full = (*lead, num_heads)
    bshape = tuple(bias.shape)
    if len(bshape) > len(full) + 2:
        raise ValueError(f"score bias {bshape} has more axes than the scores {(*full, Nq, N)}")
    own = (1,) * (len(full) + 2 - len(bshape)) + bshape                     # left-padded
    for have, want in zip(own, (*full, Nq, N)):
        if have not in (1, want):
            raise ValueError(f"score bias {bshape} does not broadcast to the scores {(*full, Nq, N)}")
    groups = own[:-2]
    items = xp.broadcast_to(xp.asarray(bias, dtype=dtype).reshape(own), (*groups, Nq, N))
    items = items.reshape(-1, Nq, N) * LOG2E
    index = xp.broadcast_to(xp.arange(items.shape[0]).reshape(groups), full).reshape(-1)
    return ScoreBias(items, index, bshape, tuple(lead))


class AttentionCache(NamedTuple):
    q: Any           # (G, Nq, Dh), already multiplied by scale * log2(e); Nq = N unless ``queries``
    k: Any           # (G, N, Dh)
    v: Any           # (G, N, Dh)
    row_max: Any     # (G, Nq, 1)  m
    inv_sum: Any     # (G, Nq, 1)  1 / l
    mask: Any        # (G, Nq, N) scaled keep-mask of attention dropout, or None
    bias: Any        # ScoreBias or None
    bias_grad: bool  # return the bias's gradient (a parameter) or not (a constant mask)
    out: Any         # (..., Nq, H*Dh) the forward's result
    scale: float
    heads: int
    backend: Any


def attention_forward(qkv, num_heads, scale, backend, attn_drop=0.0, rng=None, drop_mask=None,
                      bias=None, bias_grad=False, queries=None):
    """qkv (..., N, 3D) -> (out (..., Nq, D), cache); ``bias`` broadcastable to (..., H, Nq, N).
    ``queries``: only the first ``queries`` tokens ask (Nq = queries; every token is a key and a
    value), for a last block whose other rows nothing reads; None: all of them (Nq = N)."""
    xp = backend.xp
    *lead, N, three_d = qkv.shape
    Nq = N if queries is None else queries
    B, H = math.prod(lead), num_heads
    Dh = three_d // (3 * H)
    G = B * H
    q = xp.empty((B, H, Nq, Dh), dtype=qkv.dtype)
    k, v = (xp.empty((B, H, N, Dh), dtype=qkv.dtype) for _ in range(2))

    def split_heads(qkv_, q_, k_, v_):                                       # a few items
        qkv_ = qkv_.reshape(-1, N, 3, H, Dh).transpose(2, 0, 3, 1, 4)         # (3, b, H, N, Dh)
        xp.multiply(qkv_[0][:, :, :Nq], scale * LOG2E, out=q_)
        k_[...] = qkv_[1]
        v_[...] = qkv_[2]

    backend.rowwise(split_heads, qkv.reshape(B, N, three_d), q, k, v, blocked=True)
    q, k, v = q.reshape(G, Nq, Dh), k.reshape(G, N, Dh), v.reshape(G, N, Dh)
    out = xp.empty((G, Nq, Dh), dtype=qkv.dtype)
    row_max = xp.empty((G, Nq, 1), dtype=qkv.dtype)
    inv_sum = xp.empty((G, Nq, 1), dtype=qkv.dtype)
    sb = None if bias is None else score_bias(bias, lead, H, Nq, N, xp, qkv.dtype)
    # Masks are drawn here, whole, so they do not depend on how the backend splits the work.
    mask = drop_mask.reshape(G, Nq, N) if drop_mask is not None else \
        dropout_mask((G, Nq, N), attn_drop, rng, backend, qkv.dtype)
    optional = [a for a in (mask, None if sb is None else sb.index) if a is not None]

    def block(q_, k_, v_, out_, m_, r_, *rest):
        mask_ = rest[0] if mask is not None else None
        bias_ = sb.items[rest[-1]] if sb is not None else None
        attend(q_, k_, v_, backend, bias_, out_, m_, r_, mask_)

    backend.rowwise(block, q, k, v, out, row_max, inv_sum, *optional, blocked=True, row_size=Nq * N)
    out = out.reshape(B, H, Nq, Dh).transpose(0, 2, 1, 3).reshape(*lead, Nq, H * Dh)  # (..., Nq, D)
    cache = AttentionCache(q, k, v, row_max, inv_sum, mask, sb, bias_grad, out, scale, H, backend)
    return out, cache


def attention_backward(dout, cache):
    """Returns (dqkv (..., N, 3D), dbias or None): dbias in the bias's own shape, when it was
    given with ``bias_grad=True``.  With ``queries``, the rows of dq past them are zero."""
    q, k, v, row_max, inv_sum, mask, sb, bias_grad, out, scale, H, backend = cache
    xp = backend.xp
    G, Nq, Dh = q.shape
    N = k.shape[1]
    lead = out.shape[:-2]
    B = G // H
    dout4 = dout.reshape(B, Nq, H, Dh)
    # D_i = dout_i . out_i = sum_j P_ij dP_ij, per (item, head, query)
    row_dot = (dout4 * out.reshape(B, Nq, H, Dh)).sum(axis=-1)              # (B, Nq, H)
    row_dot = xp.ascontiguousarray(row_dot.transpose(0, 2, 1)).reshape(G, Nq, 1)
    dout = xp.ascontiguousarray(dout4.transpose(0, 2, 1, 3)).reshape(G, Nq, Dh)
    dqkv = (xp.empty if Nq == N else xp.zeros)((3, G, N, Dh), dtype=dout.dtype)
    dscores = xp.empty((G, Nq, N), dtype=dout.dtype) if sb is not None and bias_grad else None
    optional = [a for a in (mask, None if sb is None else sb.index, dscores) if a is not None]

    def block(q_, k_, v_, dout_, d_, m_, r_, dq_, dk_, dv_, *rest):
        rest = list(rest)
        mask_ = rest.pop(0) if mask is not None else None
        index_ = rest.pop(0) if sb is not None else None
        e = q_ @ xp.swapaxes(k_, -1, -2)                                     # recompute E
        if sb is not None:
            e += sb.items[index_]
        e -= m_
        backend.exp2(e, out=e)
        dropped = e * mask_ if mask_ is not None else e                      # l * dropout(P)
        xp.matmul(xp.swapaxes(dropped, -1, -2), dout_ * r_, out=dv_)        # dv = dropout(P)^T dout
        g = dout_ @ xp.swapaxes(v_, -1, -2)                                  # d dropout(P)
        if mask_ is not None:
            g *= mask_                                                       # dP
        g -= d_
        g *= e                                                               # l * dS
        if rest:
            xp.multiply(g, r_, out=rest[0])                                  # dS (base e)
        xp.matmul(g, k_, out=dq_)
        dq_ *= r_ * scale                                                    # q was scaled
        xp.matmul(xp.swapaxes(g, -1, -2), q_ * (r_ / LOG2E), out=dk_)        # q_ / log2(e) = scale q

    backend.rowwise(block, q, k, v, dout, row_dot, row_max, inv_sum, dqkv[0][:, :Nq], dqkv[1], dqkv[2],
                    *optional, blocked=True, row_size=Nq * N)
    dqkv = dqkv.reshape(3, B, H, N, Dh).transpose(1, 3, 0, 2, 4)             # (B, N, 3, H, Dh)
    dqkv = dqkv.reshape(*lead, N, 3 * H * Dh)
    dbias = None if dscores is None else _sum_to_shape(dscores.reshape(*sb.lead, H, Nq, N), sb.shape)
    return dqkv, dbias


def _sum_to_shape(a, shape):
    """Sum ``a`` over the axes that broadcasting ``shape`` up to ``a.shape`` created or stretched."""
    extra = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(extra))) if extra else a
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=stretched, keepdims=True) if stretched else a


# --- the probabilities themselves, for seeing inside (model/observe.py) ------------------------------
def attention_probs(q, k, num_heads, scale, xp, bias=None):
    """P (..., H, Nq, N) = softmax(scale q k^T + bias) per head, for q (..., Nq, D), k (..., N, D)
    (views are fine); ``bias`` broadcastable to (..., H, Nq, N)."""
    *lead, Nq, D = q.shape
    heads = lambda a: xp.moveaxis(a.reshape(*a.shape[:-1], num_heads, D // num_heads), -2, -3)
    s = xp.matmul(heads(q), xp.swapaxes(heads(k), -1, -2)) * scale              # (..., H, Nq, N)
    if bias is not None:
        s = s + bias
    s -= xp.max(s, axis=-1, keepdims=True)
    p = xp.exp(s, out=s)
    p /= xp.sum(p, axis=-1, keepdims=True)
    return p


def attention_probs_from_cache(cache):
    """P (..., H, Nq, N) of a forward, recomputed from its cache as the backward does."""
    e = cache.q @ cache.backend.xp.swapaxes(cache.k, -1, -2)
    if cache.bias is not None:
        e += cache.bias.items[cache.bias.index]
    e -= cache.row_max
    cache.backend.exp2(e, out=e)
    e *= cache.inv_sum
    return e.reshape(*cache.out.shape[:-2], cache.heads, *e.shape[-2:])


def attention_probs_grad(dout, cache):
    """dP (..., H, Nq, N): the gradient with respect to the probabilities (before attention
    dropout) given ``dout``, the gradient of the attention's output (..., Nq, D)."""
    xp, H = cache.backend.xp, cache.heads
    (G, Nq, Dh), N = cache.q.shape, cache.v.shape[1]
    dout = xp.moveaxis(dout.reshape(-1, Nq, H, Dh), 2, 1).reshape(G, Nq, Dh)
    dp = dout @ xp.swapaxes(cache.v, -1, -2)
    if cache.mask is not None:
        dp *= cache.mask
    return dp.reshape(*cache.out.shape[:-2], H, Nq, N)


def apply_probs(p, v, xp):
    """(..., H, Nq, N) probabilities times v (..., N, D) -> (..., Nq, D), heads merged."""
    H = p.shape[-3]
    vh = xp.moveaxis(v.reshape(*v.shape[:-1], H, v.shape[-1] // H), -2, -3)     # (..., H, N, Dh)
    out = xp.moveaxis(p @ vh, -3, -2)                                            # (..., Nq, H, Dh)
    return out.reshape(*out.shape[:-2], v.shape[-1])
