"""Seeing inside a forward and backward pass: what a model shows an ``Observer`` as it goes.

A pass started with ``model.forward(x, observer=obs)`` calls, in order:

* ``obs.attention(prefix, probs)`` for each attention whose ``prefix`` (``blocks.3.``) the observer
  ``wants_attention``: the post-softmax probabilities, (B, H, N, N) for a ViT block, (B, windows,
  H, n, n) for a Swin block;
* ``obs.block_output(index, h)`` after each ViT block and each Swin stage: the residual stream
  (B, N, D), an array the next block overwrites in place (copy what you keep);

and a ``backward`` after such a forward (``grad=True``) calls, last block first,
``obs.attention_grad(prefix, probs, dprobs)``: the probabilities again and the gradient of the
backward's objective with respect to them (before attention dropout).

An eval pass shares its batch out to threads, each taking whole images (``Model._map_images``); an
observer that can follow that says so by ``fork()``: each share is shown to a fresh observer of its
own, and ``join(forks)`` then merges them in image order.  An observer whose ``fork()`` returns None
sees the batch whole, on the calling thread's schedule (the fused kernels still split their rows
over the pool).  Computing the probabilities costs one more q k^T product for each wanted
attention, nothing for the others.  npvit.explain builds on this.
"""


class Observer:
    """Every hook does nothing here; subclasses override what they need."""

    def wants_attention(self, prefix):
        return False

    def attention(self, prefix, probs):
        pass

    def attention_grad(self, prefix, probs, dprobs):
        pass

    def block_output(self, index, h):
        pass

    def fork(self):
        """A fresh observer for a share of the batch, or None to see the batch whole."""
        return None

    def join(self, forks, xp):
        """Take in what the forks (in image order) observed; ``xp`` the backend's array module."""


class Recorder(Observer):
    """Keeps the attention probabilities of the blocks in ``prefixes`` and copies of the block
    outputs at ``indices`` (either may be empty)."""

    def __init__(self, prefixes=(), indices=()):
        self.prefixes, self.indices = set(prefixes), set(indices)
        self.probs, self.outputs = {}, {}

    def wants_attention(self, prefix):
        return prefix in self.prefixes

    def attention(self, prefix, probs):
        self.probs[prefix] = probs

    def block_output(self, index, h):
        if index in self.indices:
            self.outputs[index] = h.copy()

    def fork(self):
        return Recorder(self.prefixes, self.indices)

    def join(self, forks, xp):
        for name in ("probs", "outputs"):
            parts = [getattr(f, name) for f in forks]
            getattr(self, name).update({k: xp.concatenate([p[k] for p in parts]) for k in parts[0]})
