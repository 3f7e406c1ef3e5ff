"""Swin's relative position bias: one learned value per head for each relative offset in a window.

    index[i, j] = (hi - hj + wh - 1) * (2 ww - 1) + (wi - wj + ww - 1)     tokens i, j of a window,
                                                                            row-major (h, w) order
    bias[h, i, j] = table[index[i, j], h]                                  (H, n, n) from (T, H)

The table has T = (2 wh - 1)(2 ww - 1) rows.  Backward: each table row receives the sum of the
bias gradients at every (i, j) that read it -- a scatter-add with repeated indices (the diagonal
reads one row n times), done with ``backend.index_add`` (NumPy's ``add.at``; on CuPy plain fancy
assignment would drop the duplicates).  Cache: the index and the table's shape.
"""
from typing import Any, NamedTuple


def relative_position_index(window, xp):
    """(n, n) integer index into the table, n = wh * ww (as timm, Hugging Face and the original)."""
    wh, ww = window
    rows, cols = xp.meshgrid(xp.arange(wh), xp.arange(ww), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)                       # (n,) token coordinates
    dh = rows[:, None] - rows[None, :] + (wh - 1)
    dw = cols[:, None] - cols[None, :] + (ww - 1)
    return dh * (2 * ww - 1) + dw


class RelPosCache(NamedTuple):
    index: Any           # (n, n)
    table_shape: tuple   # (T, H)
    backend: Any


def relpos_bias_forward(table, index, backend):
    """table (T, H), index (n, n) -> bias (H, n, n)."""
    n = index.shape[0]
    bias = table[index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)  # (H, n, n)
    return backend.xp.ascontiguousarray(bias), RelPosCache(index, table.shape, backend)


def relpos_bias_backward(dbias, cache):
    """dbias (H, n, n) -> dtable (T, H)."""
    index, table_shape, backend = cache
    dtable = backend.xp.zeros(table_shape, dtype=dbias.dtype)
    backend.index_add(dtable, index.reshape(-1), dbias.reshape(dbias.shape[0], -1).T)
    return dtable
