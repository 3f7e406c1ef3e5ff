"""The residual connection of a pre-norm block:  y = h + branch(h).

Forward: the sum is written into ``h`` in place (no new (B, N, D) array per sublayer).  That is
safe because nothing keeps the residual stream for the backward: the LayerNorm that reads it
keeps xhat, not its input (see ``LayerNormCache``), the branch's other ops read only arrays of
their own, and a model's first stream array is made by its embedding, never the caller's images.
A change that caches the stream itself must give up the in-place add.

Backward: the output's gradient reaches h twice, straight through the skip and through the
branch, and the two sum.  This is the one place where activation gradients add up; the sum is
written into the skip's gradient, which nothing reads afterwards.  A block that keeps only its
first token rows (``queries``, a last block whose other rows nothing reads) carries only those
rows through its skip: their gradient is then added into those rows of the branch's.
"""


def residual_forward(h, branch, backend):
    """h + branch, written into h (when h is contiguous; else a new array)."""
    return _add_into(h, branch, backend)


def residual_backward(dy, dh_branch, backend):
    """dh = dy (the skip) + dh_branch (through the branch), written into dy; or, where the skip
    carried only the first rows (dy (B, Nq, D), dh_branch (B, N, D)), into those rows of dh_branch."""
    if dy.shape[1] != dh_branch.shape[1]:
        dh_branch[:, :dy.shape[1]] += dy
        return dh_branch
    return _add_into(dy, dh_branch, backend)


def _add_into(a, b, backend):
    if not a.flags.c_contiguous:  # a reshape would copy, and the sum land in the copy
        return a + b
    add = lambda a_, b_: backend.xp.add(a_, b_, out=a_)
    M = a.size // a.shape[-1]
    backend.rowwise(add, a.reshape(M, -1), b.reshape(M, -1))
    return a
