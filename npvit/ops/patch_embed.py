"""Patch embedding as reshape + one matmul (the stride-p convolution it replaces, without a loop).

    x (B, C, H, W) -> patches (B, gh*gw, C*ph*pw) -> tokens = patches @ W.reshape(D, -1).T + b

W keeps PyTorch's conv layout (D, C, ph, pw), so flattening a patch in (C, ph, pw) order lines it
up with W's rows.  Any patch size that divides the image works, square or not.
Cache: the linear cache (the patches and flattened weight) plus the image shape for un-patching.
"""
from typing import Any, NamedTuple

from .linear import linear_backward, linear_forward


class PatchEmbedCache(NamedTuple):
    linear: Any
    image_shape: tuple
    patch: tuple


def patchify(x, patch):
    B, C, H, W = x.shape
    ph, pw = patch
    gh, gw = H // ph, W // pw
    x = x.reshape(B, C, gh, ph, gw, pw).transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
    return x.reshape(B, gh * gw, C * ph * pw)


def unpatchify(patches, image_shape, patch):
    B, C, H, W = image_shape
    ph, pw = patch
    gh, gw = H // ph, W // pw
    x = patches.reshape(B, gh, gw, C, ph, pw).transpose(0, 3, 1, 4, 2, 5)  # (B, C, gh, ph, gw, pw)
    return x.reshape(B, C, H, W)


def patch_embed_forward(x, weight, bias, backend):
    patch = weight.shape[2:]
    tokens, lin = linear_forward(patchify(x, patch), weight.reshape(weight.shape[0], -1), bias, backend)
    return tokens, PatchEmbedCache(lin, x.shape, patch)                   # (B, gh*gw, D)


def patch_embed_backward(dtokens, cache, input_grad=True):
    """Returns (dx, dweight, dbias); dweight in the (D, C, ph, pw) conv layout.  With
    ``input_grad=False`` dx is None and its GEMM is skipped."""
    dpatches, dweight, dbias = linear_backward(dtokens, cache.linear, input_grad)
    dx = unpatchify(dpatches, cache.image_shape, cache.patch) if input_grad else None
    return dx, dweight.reshape(dweight.shape[0], -1, *cache.patch), dbias
