"""Prefix tokens and the learnable position embedding.

    x (B, L, D) -> concat([cls, dist, x], axis=1) + pos_embed     (B, L + n_prefix, D)

``cls`` and ``dist`` are (1, 1, D) parameters, either may be None (``gap`` models have no class
token; only DeiT-distilled models have a distillation token).  As in timm and the official code the
position embedding covers the prefix tokens too.  Nothing is cached but the prefix count.
"""
from typing import NamedTuple


class TokensCache(NamedTuple):
    n_prefix: int
    has_cls: bool
    has_dist: bool


def tokens_forward(x, cls_token, dist_token, pos_embed, backend):
    xp, (B, _, D) = backend.xp, x.shape
    prefix = [t for t in (cls_token, dist_token) if t is not None]
    if prefix:
        x = xp.concatenate([xp.broadcast_to(t, (B, 1, D)) for t in prefix] + [x], axis=1)
    else:
        x = x.copy()  # the caller may write into the result; never alias the patch tokens
    x += pos_embed
    return x, TokensCache(len(prefix), cls_token is not None, dist_token is not None)


def tokens_backward(dy, cache):
    """Returns (dx, dcls or None, ddist or None, dpos_embed)."""
    dpos = dy.sum(axis=0, keepdims=True)
    i, dcls, ddist = 0, None, None
    if cache.has_cls:
        dcls = dy[:, i:i + 1].sum(axis=0, keepdims=True)
        i += 1
    if cache.has_dist:
        ddist = dy[:, i:i + 1].sum(axis=0, keepdims=True)
    return dy[:, cache.n_prefix:], dcls, ddist, dpos
