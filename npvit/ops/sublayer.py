"""The two steps every pre-norm sublayer is made of, each with one fused kernel for eval.

    norm_linear:      y = dropout(act(LayerNorm(x) W^T + b))        act: none or GELU
    linear_residual:  h = h + drop_path(dropout(x W^T + b))        (h written in place)

A ViT or Swin block is  h = linear_residual(attention(h), proj, h)  then
h = linear_residual(norm_linear(h, norm2, fc1, gelu), fc2, h): the qkv projection is a
norm_linear with no activation.  In a pass that keeps nothing for a backward and drops nothing
(``Pass.fused``), each step is one backend kernel (``Backend.layernorm_linear`` and
``Backend.linear_residual``: fused and multi-threaded on NumPy, plain ``xp`` twins elsewhere);
otherwise the step runs the ops one by one and returns their caches for the backward below.
"""
from typing import Any, NamedTuple

from .activations import gelu_backward, gelu_forward
from .dropout import drop_path_backward, drop_path_forward, dropout_backward, dropout_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .residual import residual_forward


class Pass(NamedTuple):
    """How one forward pass runs: on which backend, in training mode (``train``: dropout on, with
    masks drawn from ``rng``), keeping caches for a backward (``grad``), through the fused eval
    kernels (``fused``).  ``memo`` holds what a pass derives from the weights once (folded
    biases), shared by its threads.  ``observer`` (model/observe.py) is shown what the pass
    computes: attention probabilities, block outputs, and in the backward their gradients."""
    backend: Any
    train: bool = False
    rng: Any = None
    grad: bool = False
    fused: bool = False
    memo: Any = None
    observer: Any = None


class NormLinearCache(NamedTuple):
    norm: Any        # LayerNormCache
    linear: Any      # LinearCache
    act: Any         # GeluCache or None
    drop: Any        # DropoutCache or None


def norm_linear_forward(x, norm_weight, norm_bias, eps, weight, bias, run, act=None, drop=0.0):
    """(y, cache); the cache is None unless ``run.grad``."""
    be = run.backend
    if run.fused:
        return be.layernorm_linear(x, norm_weight, norm_bias, eps, weight, bias, act=act), None
    y, norm = layernorm_forward(x, norm_weight, norm_bias, eps, be, keep_grad=run.grad)
    y, linear = linear_forward(y, weight, bias, be)
    act_cache = None
    if act is not None:
        y, act_cache = gelu_forward(y, act, be, keep_grad=run.grad)
    y, dropped = dropout_forward(y, drop, run.rng, be)
    return y, (NormLinearCache(norm, linear, act_cache, dropped) if run.grad else None)


def norm_linear_backward(dy, cache):
    """Returns (dx, dnorm_weight, dnorm_bias, dweight, dbias).  Each op's cache is let go once its
    backward is done (the caller hands the cache over), as the forward made them in reverse."""
    norm, linear, act, drop = cache
    del cache
    dy = dropout_backward(dy, drop)
    del drop
    if act is not None:
        dy = gelu_backward(dy, act)
    del act                                                    # GELU'(x): 4 times the width
    dy, dweight, dbias = linear_backward(dy, linear)
    del linear
    dx, dnorm_weight, dnorm_bias = layernorm_backward(dy, norm)
    return dx, dnorm_weight, dnorm_bias, dweight, dbias


class LinearResidualCache(NamedTuple):
    linear: Any      # LinearCache
    drop: Any        # DropoutCache or None
    drop_path: Any   # DropoutCache (one mask value per sample) or None


def linear_residual_forward(x, weight, bias, h, run, drop=0.0, drop_path=0.0):
    """(h + branch, cache), the sum written into ``h``; the cache is None unless ``run.grad``."""
    be = run.backend
    if run.fused:
        return be.linear_residual(x, weight, bias, h), None
    y, linear = linear_forward(x, weight, bias, be)
    y, dropped = dropout_forward(y, drop, run.rng, be)
    y, path = drop_path_forward(y, drop_path, run.rng, be)
    h = residual_forward(h, y, be)
    return h, (LinearResidualCache(linear, dropped, path) if run.grad else None)


def linear_residual_backward(dh, cache):
    """Returns (dx, dweight, dbias): the gradient of the branch's input.  ``dh`` itself also flows
    straight on through the skip; the caller adds the two where they meet (ops/residual.py)."""
    dy = drop_path_backward(dh, cache.drop_path)
    dy = dropout_backward(dy, cache.drop)
    return linear_backward(dy, cache.linear)
