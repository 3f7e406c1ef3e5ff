"""Parameter groups: which parameters train, which decay, and each one's learning-rate scale.

A group is a dict ``{"name", "names", "weight_decay", "lr_scale"}``; an optimizer applies
``lr = opt.lr * lr_scale`` and ``weight_decay`` to every name in it.

Weight decay (timm's ``param_groups_weight_decay`` rule): by default a parameter is exempt when it
is 1-D (biases, LayerNorm weights) or matches a ``no_decay`` pattern (``DEFAULT_NO_DECAY``: biases,
norms, class/distillation tokens, position embeddings, Swin's relative position tables).  Patterns are shell globs on the full
state-dict name (``fnmatch``).  ``no_decay=()`` decays everything, 1-D parameters included.

Layer-wise learning-rate decay (BEiT; timm's ``param_groups_layer_decay``): with ``depth`` blocks
there are ``depth + 2`` layers -- 0 the stem (tokens, position embeddings, patch embedding),
``i + 1`` for the i-th block (ViT's ``blocks.i``; Swin's blocks counted through the stages, each
stage's patch merging with the stage's first block), ``depth`` again for the final norm (timm
groups it with the last block), ``depth + 1`` for everything after (pre_logits, heads).  Layer
``l`` gets ``lr_scale = layer_decay ** (depth + 1 - l)``, so the head learns at the full rate.
"""
import fnmatch
import re

DEFAULT_NO_DECAY = ("*.bias", "*norm*", "cls_token", "dist_token", "pos_embed", "absolute_pos_embed",
                    "*relative_position_bias_table")
_STEM = ("cls_token", "dist_token", "pos_embed", "absolute_pos_embed")
_BLOCK = re.compile(r"^(blocks\.\d+|layers\.\d+\.blocks\.\d+)\.")           # ViT's, Swin's
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")


def matches(name, patterns):
    """True when ``name`` matches any glob in ``patterns`` (a bare word must match exactly)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_trainable(names, trainable=None):
    """The names to optimise, in order.

    ``trainable`` is None (all), or names / globs / dotted prefixes: ``"head"`` selects
    ``head.weight`` and ``head.bias``; ``"blocks.11"`` selects the whole last block.
    """
    names = list(names)
    if trainable is None:
        return names
    if isinstance(trainable, str):
        trainable = (trainable,)
    trainable = tuple(trainable)
    chosen = [n for n in names
              if matches(n, trainable) or any(n.startswith(p.rstrip(".") + ".") for p in trainable)]
    unused = [p for p in trainable
              if not any(matches(n, (p,)) or n.startswith(p.rstrip(".") + ".") for n in names)]
    if unused:
        raise ValueError(f"trainable pattern(s) {unused} match no parameter; parameter names look "
                         f"like {names[:3]} ... {names[-2:]}")
    if not chosen:
        raise ValueError("no parameter is trainable: check the trainable= patterns")
    return chosen


def block_order(names):
    """{block prefix: its index through the whole network} (``blocks.3``, ``layers.1.blocks.0``),
    in the order the names list the blocks."""
    order = {}
    for name in names:
        m = _BLOCK.match(name)
        if m and m.group(1) not in order:
            order[m.group(1)] = len(order)
    return order


def layer_id(name, order):
    """The layer index of a parameter for layer-wise lr decay (see module docstring); ``order``
    from ``block_order``."""
    depth = len(order)
    if name in _STEM or name.startswith("patch_embed."):
        return 0
    m = _BLOCK.match(name)
    if m:
        return order[m.group(1)] + 1
    m = _MERGE.match(name)
    if m:
        return order[f"layers.{m.group(1)}.blocks.0"] + 1
    if name.startswith("norm."):
        return depth
    return depth + 1


def param_groups(shapes, weight_decay=0.0, no_decay=None, layer_decay=None, trainable=None):
    """Split parameters into groups.

    ``shapes``: {name: shape} (or {name: array}) of the model, in order.  ``no_decay``: None for
    the default rule (1-D or ``DEFAULT_NO_DECAY``), else the only patterns exempt.
    ``layer_decay``: None, or a factor in (0, 1] for layer-wise lr decay.
    """
    shapes = {n: tuple(getattr(s, "shape", s)) for n, s in shapes.items()}
    names = select_trainable(shapes, trainable)
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    order = block_order(shapes)
    depth = len(order)
    groups = {}
    for name in names:
        if no_decay is None:
            exempt = len(shapes[name]) <= 1 or matches(name, DEFAULT_NO_DECAY)
        else:
            exempt = matches(name, tuple(no_decay))
        decay = 0.0 if exempt else float(weight_decay)
        if layer_decay is None:
            key, scale = ("no_decay" if exempt else "decay"), 1.0
        else:
            lid = layer_id(name, order)
            key = f"layer_{lid}_{'no_decay' if exempt else 'decay'}"
            scale = float(layer_decay) ** (depth + 1 - lid)
        group = groups.setdefault(key, {"name": key, "names": [], "weight_decay": decay,
                                        "lr_scale": scale})
        group["names"].append(name)
    return list(groups.values())
