"""Swin's shifted windows: the token grid rearranged into non-overlapping windows, and back.

    cyclic_shift:     x (B, H, W, C) rolled by (-sh, -sw) along H and W        (undone by +sh, +sw)
    pad:              x (B, H, W, C) -> (B, Hp, Wp, C), Hp and Wp the next multiples of the window,
                      filled with zeros (or a given per-channel value)         (undone by cropping)
    window_partition: x (B, Hp, Wp, C) -> (B, nW, wh*ww, C), windows in row-major order, the
                      tokens of a window in row-major order                    (undone by window_reverse)
    windows / merge_windows:  the three in the order a Swin block uses them, and their inverse
    shift_mask:       the constant (nW, n, n) score mask of a shifted layout

Every op is a permutation, a pad or a crop, so each backward is the inverse layout change applied
to the gradient (a pad's backward crops, and sums what reached the pad into the pad value's
gradient when the value is a parameter); nothing is cached but shapes.  timm shifts then pads;
Hugging Face (and the original code, which never pads) pad then shift: the two differ only when
the grid is not a multiple of the window (``SwinConfig.window_rule``).

A block partitions its qkv tensor, not its normalised input as timm does: a linear layer maps a
zero pad token to its bias, so padding qkv with the qkv bias is the same (and lets LayerNorm and
the qkv product run as one fused step on the unpadded tokens).
"""
from typing import NamedTuple


# --- cyclic shift ------------------------------------------------------------------------------
def cyclic_shift_forward(x, shift, backend):
    """x (B, H, W, C) rolled by -shift = (-sh, -sw); nothing to cache (the backward rolls back)."""
    return backend.xp.roll(x, (-shift[0], -shift[1]), axis=(1, 2)) if any(shift) else x


def cyclic_shift_backward(dy, shift, backend):
    return backend.xp.roll(dy, (shift[0], shift[1]), axis=(1, 2)) if any(shift) else dy


# --- pad and crop ------------------------------------------------------------------------------
def padded_grid(grid, window):
    return (-(-grid[0] // window[0]) * window[0], -(-grid[1] // window[1]) * window[1])


def pad_forward(x, window, backend, value=None):
    """x (B, H, W, C) -> (B, Hp, Wp, C), the new rows and columns below and to the right filled
    with ``value`` (C,) (zeros when None)."""
    B, H, W, C = x.shape
    Hp, Wp = padded_grid((H, W), window)
    if (Hp, Wp) == (H, W):
        return x
    out = backend.xp.empty((B, Hp, Wp, C), dtype=x.dtype)
    out[:, :H, :W] = x
    fill = 0.0 if value is None else value
    out[:, H:] = fill
    out[:, :H, W:] = fill
    return out


def pad_backward(dy, grid, with_value=False):
    """Returns (dx, dvalue): dx cropped to ``grid``; dvalue (C,) the sum over the padded places
    (None unless ``with_value``)."""
    H, W = grid
    dx = dy[:, :H, :W]
    if not with_value:
        return dx, None
    dvalue = dy[:, H:].sum(axis=(0, 1, 2)) + dy[:, :H, W:].sum(axis=(0, 1, 2))
    return dx, dvalue


def crop_backward(dy, grid, backend):
    """The crop of ``merge_windows`` undone for the gradient: zero-pad (B, H, W, C) to ``grid``."""
    B, H, W, C = dy.shape
    if (H, W) == tuple(grid):
        return dy
    dx = backend.xp.zeros((B, *grid, C), dtype=dy.dtype)
    dx[:, :H, :W] = dy
    return dx


# --- partition and reverse -----------------------------------------------------------------------
def window_partition(x, window):
    """(B, Hp, Wp, C) -> (B, nW, wh*ww, C) (a copy); Hp, Wp multiples of the window."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.reshape(B, H // wh, wh, W // ww, ww, C).transpose(0, 1, 3, 2, 4, 5)  # (B, H/wh, W/ww, wh, ww, C)
    return x.reshape(B, (H // wh) * (W // ww), wh * ww, C)


def window_reverse(windows, window, grid):
    """(B, nW, wh*ww, C) -> (B, Hp, Wp, C), ``grid`` = (Hp, Wp): the inverse of ``window_partition``."""
    B, C = windows.shape[0], windows.shape[-1]
    (wh, ww), (H, W) = window, grid
    x = windows.reshape(B, H // wh, W // ww, wh, ww, C).transpose(0, 1, 3, 2, 4, 5)  # (B, H/wh, wh, W/ww, ww, C)
    return x.reshape(B, H, W, C)


# A permutation's backward is its inverse: the partition's is the reverse, and the other way round.
def window_partition_backward(dwindows, window, grid):
    return window_reverse(dwindows, window, grid)


def window_reverse_backward(dx, window):
    return window_partition(dx, window)


# --- a block's whole layout ----------------------------------------------------------------------
class WindowLayout(NamedTuple):
    """How a block lays its (H, W) grid out in windows (what the backward and the reverse need)."""
    grid: tuple          # (H, W) of the tokens
    window: tuple        # (wh, ww)
    shift: tuple         # (sh, sw), zeros for an unshifted block
    pad_first: bool      # Hugging Face's order (pad, then shift) instead of timm's (shift, then pad)

    @property
    def padded(self):
        return padded_grid(self.grid, self.window)


def windows_forward(x, layout, backend, pad_value=None):
    """x (B, H, W, C) -> (B, nW, n, C): shift and pad (in the layout's order), then partition."""
    if layout.pad_first:
        x = cyclic_shift_forward(pad_forward(x, layout.window, backend, pad_value), layout.shift, backend)
    else:
        x = pad_forward(cyclic_shift_forward(x, layout.shift, backend), layout.window, backend, pad_value)
    return window_partition(x, layout.window)


def windows_backward(dwindows, layout, backend, with_value=False):
    """Returns (dx (B, H, W, C), dpad_value or None)."""
    dx = window_partition_backward(dwindows, layout.window, layout.padded)
    if layout.pad_first:
        return pad_backward(cyclic_shift_backward(dx, layout.shift, backend), layout.grid, with_value)
    dx, dvalue = pad_backward(dx, layout.grid, with_value)
    return cyclic_shift_backward(dx, layout.shift, backend), dvalue


def merge_windows_forward(windows, layout, backend):
    """The inverse of ``windows_forward``: (B, nW, n, C) -> (B, H, W, C), padding cropped."""
    H, W = layout.grid
    x = window_reverse(windows, layout.window, layout.padded)
    if layout.pad_first:
        return cyclic_shift_backward(x, layout.shift, backend)[:, :H, :W]
    return cyclic_shift_backward(x[:, :H, :W], layout.shift, backend)


def merge_windows_backward(dx, layout, backend):
    """(B, H, W, C) -> (B, nW, n, C): the gradient laid out as the windows were (zeros on the pad)."""
    if layout.pad_first:
        dx = cyclic_shift_forward(crop_backward(dx, layout.padded, backend), layout.shift, backend)
    else:
        dx = crop_backward(cyclic_shift_forward(dx, layout.shift, backend), layout.padded, backend)
    return window_reverse_backward(dx, layout.window)


# --- the shifted-window mask -----------------------------------------------------------------------
def shift_mask(layout, xp, dtype):
    """(nW, n, n) additive score mask for a shifted layout (None without a shift), built as timm and
    Hugging Face build it: the padded grid is labelled in 3 x 3 regions (along each axis: the part
    before the last window, the last window up to the shift, the shift), partitioned like the
    tokens, and scores between tokens with different labels get -100 (exp(-100) ~ 4e-44), others 0."""
    if not any(layout.shift):
        return None
    (wh, ww), (sh, sw) = layout.window, layout.shift
    labels = xp.zeros((1, *layout.padded, 1), dtype=dtype)
    count = 0
    # Python's slices as timm writes them: with a zero shift, (-w, -0) is empty and (-0, None) all
    for rows in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for cols in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            labels[:, rows, cols] = count
            count += 1
    windows = window_partition(labels, layout.window)[0, :, :, 0]          # (nW, n)
    diff = windows[:, None, :] - windows[:, :, None]                       # label_j - label_i
    return xp.where(diff != 0, xp.asarray(-100.0, dtype=dtype), xp.asarray(0.0, dtype=dtype))
