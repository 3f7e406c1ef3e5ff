"""Resample the position embedding's patch grid to another image size; prefix tokens are kept.

    pos_embed (1, n_prefix + h*w, D) -> (1, n_prefix + H*W, D)

The grid (h, w, D) is resampled separably: ``out = Wh @ grid @ Ww^T`` per channel, where each
1-D weight matrix (n_out, n_in) encodes one framework's interpolation:

    "linear_corners"  official ViT / big_vision: ``scipy.ndimage.zoom(order=1)``, corner-aligned,
                      x_in = x_out * (n_in - 1) / (n_out - 1)
    "bilinear"        timm's .npz loader: ``F.interpolate(bilinear, align_corners=False)``, no
                      antialias, x_in = (x_out + 0.5) * n_in / n_out - 0.5, clamped at 0
    "bicubic"         timm's state-dict loader (``resample_abs_pos_embed`` defaults):
                      ``F.interpolate(bicubic, antialias=True)``: PyTorch's antialiased cubic
                      (Keys a = -0.5, support widened by n_in/n_out when shrinking, weights
                      clipped to the grid and renormalised)

Weights are built in float64; the result has the input's dtype.
"""
import math

import numpy as np

METHODS = ("bicubic", "bilinear", "linear_corners")


def resample_pos_embed(pos_embed, old_grid, new_grid, num_prefix, method="bicubic"):
    if method not in METHODS:
        raise ValueError(f"posemb_interpolation must be one of {METHODS}, got {method!r}")
    pos_embed = np.asarray(pos_embed)
    (h, w), (H, W) = tuple(old_grid), tuple(new_grid)
    _, n, D = pos_embed.shape
    if n != num_prefix + h * w:
        raise ValueError(f"position embedding has {n} entries, expected {num_prefix} prefix tokens "
                         f"+ a {h}x{w} grid = {num_prefix + h * w}")
    if (h, w) == (H, W):
        return pos_embed
    grid = pos_embed[0, num_prefix:].reshape(h, w, D).astype(np.float64)     # (h, w, D)
    wh, ww = _weights(method, h, H), _weights(method, w, W)                  # (H, h), (W, w)
    out = np.einsum("Yy,yxd->Yxd", wh, grid)                                 # (H, w, D)
    out = np.einsum("Xx,Yxd->YXd", ww, out)                                  # (H, W, D)
    out = out.reshape(1, H * W, D).astype(pos_embed.dtype)
    return np.concatenate([pos_embed[:, :num_prefix], out], axis=1)


def _weights(method, n_in, n_out):
    if method == "linear_corners":
        return _linear_corners(n_in, n_out)
    if method == "bilinear":
        return _bilinear_half_pixel(n_in, n_out)
    return _bicubic_antialias(n_in, n_out)


def _linear_corners(n_in, n_out):
    m = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for o in range(n_out):
        x = min(o * scale, n_in - 1)  # scipy keeps the last sample on the edge, despite rounding
        i0 = int(math.floor(x))
        i1 = min(i0 + 1, n_in - 1)
        t = x - i0
        m[o, i0] += 1.0 - t
        m[o, i1] += t
    return m


def _bilinear_half_pixel(n_in, n_out):
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for o in range(n_out):
        x = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(x), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = x - i0
        m[o, i0] += 1.0 - t
        m[o, i1] += t
    return m


def _cubic(x, a=-0.5):
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _bicubic_antialias(n_in, n_out):
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0      # the cubic's reach, in input pixels
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    for o in range(n_out):
        center = scale * (o + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        ws = np.array([_cubic((j - center + 0.5) * inv) for j in range(lo, hi)])
        m[o, lo:hi] = ws / ws.sum()
    return m


def resize_relpos_table(table, old_window, new_window):
    """A Swin relative position table ((2wh-1)(2ww-1), H) for another window, as timm's
    ``resize_rel_pos_bias_table`` does when a checkpoint's window differs from the model's (its
    default, scipy-free path): the old table's offsets are spread over the new range along a
    geometric progression (denser near 0, as BEiT's recipe) and the new offsets are interpolated
    linearly between them, separably along the two axes."""
    table = np.asarray(table)
    (oh, ow), (nh, nw) = ((2 * w[0] - 1, 2 * w[1] - 1) for w in (old_window, new_window))
    T, heads = table.shape
    if T != oh * ow:
        raise ValueError(f"relative position table has {T} rows, expected {oh}x{ow} for window {tuple(old_window)}")
    if (oh, ow) == (nh, nw):
        return table
    grid = table.reshape(oh, ow, heads).astype(np.float64)
    out = np.einsum("Yy,yxh->Yxh", _geometric_linear(oh, nh), grid)
    out = np.einsum("Xx,Yxh->YXh", _geometric_linear(ow, nw), out)
    return out.reshape(nh * nw, heads).astype(table.dtype)


def _geometric_linear(n_in, n_out):
    """(n_out, n_in) weights: linear interpolation of offsets -n_out//2 .. n_out//2 on timm's
    geometric placement of the n_in source offsets (bucketed as timm's RegularGridInterpolator)."""
    left, right = 1.01, 1.5                    # the ratio q whose progression reaches n_out // 2
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** (n_in // 2)) / (1.0 - q) > n_out // 2:
            right = q
        else:
            left = q
    steps, cur = [], 1.0
    for i in range(n_in // 2):
        steps.append(cur)
        cur += q ** (i + 1)
    src = np.array([-s for s in reversed(steps)] + [0.0] + steps)
    half = n_out // 2
    dst = np.arange(-half, half + 0.1, 1.0)
    hi = np.minimum(np.searchsorted(src, dst, side="left"), n_in - 1)
    lo = np.clip(hi - 1, 0, n_in - 1)
    d_lo, d_hi = np.maximum(dst - src[lo], 0.0), np.maximum(src[hi] - dst, 0.0)
    both = (d_lo == 0) & (d_hi == 0)
    d_lo[both] = d_hi[both] = 1.0
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), d_hi / (d_lo + d_hi))
    np.add.at(w, (rows, hi), d_lo / (d_lo + d_hi))
    return w
