"""Resize images in NumPy alone, reproducing Pillow's ``Image.resize`` (BILINEAR, BICUBIC) exactly.

Pillow (libImaging/Resample.c) resizes separably, one axis after the other. Along an axis of
length n resized to m (scale s = n / m, filter support a: 1 bilinear, 2 bicubic):

    fs     = max(s, 1)                          filter stretched when shrinking (antialiasing)
    c_j    = (j + 0.5) * s                      centre of output pixel j in input coordinates
    taps   i in [trunc(c_j - a*fs + 0.5), trunc(c_j + a*fs + 0.5)) clipped to [0, n)
    w_ji   = f((i - c_j + 0.5) / fs), then divided by sum_i w_ji
    f      = triangle (bilinear) or Keys' cubic with a = -0.5 (bicubic)

On uint8 images the weights are quantised to 22-bit fixed point, k = trunc(w * 2^22 +- 0.5), and
each pass ends in ``clip(floor((2^21 + sum_i k_ji p_i) / 2^22), 0, 255)``: the image is rounded to
uint8 between the passes, so their order matters: Pillow 13 runs the vertical pass first when
the height loses more than twice as many pixels as the width, else the horizontal one (older
Pillow always went horizontal first; on photos the orders differ by a level on a few pixels).
Here those integer sums run as float64 matrix products, which are exact
(every term and partial sum is an integer below 2^53, so the order of the sums does not matter),
and the result equals Pillow's bit for bit.
Float images follow Pillow's mode "F": the same weights unquantised, float32 after each pass.

``antialias=False`` keeps fs = 1 when shrinking: bilinear then samples the two nearest pixels at
half-pixel centres, which is ``tf.image.resize(..., "bilinear")`` (TF2, antialias off) and
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``; the result stays float.
"""
import numpy as np

PRECISION_BITS = 22          # Pillow's 32 - 8 - 2: 8 bits of pixel, 2 of headroom for overshoot
_ROWS_PER_CHUNK = 256        # bounds the float64 copy of a large photo in the first pass


def _bilinear(x):
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x):
    # Keys' cubic, a = -0.5, written in the same operation order as Pillow so it rounds the same.
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def resize_weights(n_in, n_out, method="bicubic", antialias=True):
    """(n_out, n_in) float64 matrix of normalised filter weights, computed as Pillow does."""
    if method not in FILTERS:
        raise ValueError(f"interpolation must be one of {sorted(FILTERS)}, got {method!r}")
    if n_in <= 0 or n_out <= 0:
        raise ValueError(f"cannot resize an axis of {n_in} pixels to {n_out}")
    f, base_support = FILTERS[method]
    scale = n_in / n_out
    fs = max(scale, 1.0) if antialias else 1.0
    support = base_support * fs
    ksize = int(np.ceil(support)) * 2 + 1
    centers = (np.arange(n_out) + 0.5) * scale                               # (m,)
    # C's (int) cast truncates toward zero; a negative start is clipped to 0 right after.
    lo = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(centers + support + 0.5), n_in).astype(np.int64)
    taps = lo[:, None] + np.arange(ksize)                                    # (m, ksize)
    valid = taps < hi[:, None]
    ss = 1.0 / fs                                  # Pillow multiplies by the reciprocal
    w = np.where(valid, f(((taps - centers[:, None]) + 0.5) * ss), 0.0)
    # Sum the taps left to right, as the C loop does, so that the normaliser rounds alike.
    total = np.zeros(n_out)
    for t in range(ksize):
        total += w[:, t]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    dense = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    dense[rows[valid], taps[valid]] = w[valid]
    return dense


def _fixed_point(w):
    """Pillow's 8-bit coefficients: round half away from zero to multiples of 2^-22 (as integers)."""
    scaled = w * float(1 << PRECISION_BITS)
    return np.trunc(np.where(w < 0, scaled - 0.5, scaled + 0.5))


def _pass_uint8(k, x):
    """One axis: (m, n) integer weights applied to (n, rest) uint8 values -> (m, rest) uint8."""
    acc = k @ x.astype(np.float64) + float(1 << (PRECISION_BITS - 1))       # exact integers
    return np.clip(np.floor(acc / float(1 << PRECISION_BITS)), 0, 255).astype(np.uint8)


def _horizontal(img, weights, one_pass):
    """Apply (w_out, W) weights along axis 1 of an (H, W, C) image, a few rows at a time."""
    H, W, C = img.shape
    out = []
    for start in range(0, H, _ROWS_PER_CHUNK):
        rows = img[start:start + _ROWS_PER_CHUNK]                             # (h, W, C)
        h = rows.shape[0]
        flat = rows.transpose(1, 0, 2).reshape(W, h * C)                      # (W, h*C)
        res = one_pass(weights, flat)                                         # (w_out, h*C)
        out.append(res.reshape(-1, h, C).transpose(1, 0, 2))                  # (h, w_out, C)
    return np.concatenate(out, axis=0)


def _vertical(img, weights, one_pass):
    H, W, C = img.shape
    return one_pass(weights, img.reshape(H, W * C)).reshape(-1, W, C)        # (h_out, W, C)


def resize(img, size, method="bicubic", antialias=True):
    """Resize an (H, W, C) image to ``size = (height, width)``.

    uint8 in, uint8 out: identical to ``PIL.Image.fromarray(img).resize((w, h), BICUBIC)``.
    Floating-point in: float32 out, as Pillow's mode "F" (the same weights, no rounding to 256
    levels). ``antialias=False`` (bilinear only): TF's/PyTorch's half-pixel interpolation that
    samples two pixels even when shrinking; float32 out, never rounded.
    """
    img = np.asarray(img)
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    if img.dtype != np.uint8 and img.dtype.kind != "f":
        raise TypeError(f"expected uint8 or floating-point pixels, got dtype {img.dtype}")
    if not antialias and method != "bilinear":
        raise ValueError("antialias=False is implemented for bilinear only (the official JAX "
                         "recipe); use antialias=True for bicubic")
    out_h, out_w = (int(s) for s in size)
    H, W, _ = img.shape
    quantised = img.dtype == np.uint8 and antialias
    if quantised:
        def one_pass(w, x):
            return _pass_uint8(_fixed_point(w), x)
    else:
        img = img.astype(np.float32, copy=False)

        def one_pass(w, x):  # float32 storage between passes, as Pillow's 32-bit modes
            return (w @ x.astype(np.float64)).astype(np.float32)
    passes = [(_horizontal, W, out_w), (_vertical, H, out_h)]
    if vertical_first(H, W, out_h, out_w):
        passes.reverse()
    for apply, n_in, n_out in passes:
        if n_out != n_in:  # Pillow skips an unchanged axis (its weights are the identity)
            img = apply(img, resize_weights(n_in, n_out, method, antialias), one_pass)
    return np.ascontiguousarray(img)


def vertical_first(H, W, out_h, out_w):
    """Pillow 13's pass order: vertical first if the height shrinks by more than twice the width."""
    return H - out_h > 0 and H - out_h > 2 * (W - out_w)
