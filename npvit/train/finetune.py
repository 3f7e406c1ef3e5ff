"""Fine-tuning: a new head for a new class count, and freezing all but chosen layers.

    new_head(model, K)           copy of ``model`` whose ``head`` (and ``head_dist``) is a freshly
                                 initialised K-class layer; every other weight is kept.  The
                                 representation layer (``pre_logits``, ImageNet-21k checkpoints) is
                                 dropped unless ``keep_pre_logits`` -- as the seed's train.py does
                                 with ``has_logits=False``.
    trainable_names(model, ...)  the names an optimizer should update: all, or only the head and
                                 pre_logits (the seed's ``--freeze-layers``), or chosen prefixes.

Works on any model (ViT, Swin): one from ``npvit.load(path)``, ``npvit.create_model``, or training.
"""
from ..optim.groups import select_trainable

HEAD_LAYERS = ("head", "head_dist", "pre_logits")


def new_head(model, num_classes, label_names=None, keep_pre_logits=False, seed=0):
    """A model with ``model``'s weights and a fresh ``num_classes``-way head (the input is untouched)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    cfg = model.config
    changes = dict(num_classes=int(num_classes), label_names=tuple(label_names) if label_names is not None else None)
    if hasattr(cfg, "representation_size"):  # a ViT's
        changes["representation_size"] = cfg.representation_size if keep_pre_logits else None
    fresh = type(model)(cfg.replace(**changes), dtype=model.dtype, backend=model.backend, seed=seed)
    kept = {n: p for n, p in model.params.items()
            if n in fresh.params and not n.startswith(("head.", "head_dist."))
            and tuple(p.shape) == tuple(fresh.params[n].shape)}
    fresh.load_state_dict(kept, strict=False)
    fresh.preprocess = model.preprocess
    return fresh


def trainable_names(model, freeze_layers=False, train_only=None):
    """Names to optimise: all; or, with ``freeze_layers``, only the head (+ pre_logits, head_dist);
    or the parameters under the prefixes/globs in ``train_only`` (e.g. ``["blocks.11", "norm", "head"]``)."""
    if freeze_layers and train_only:
        raise ValueError("give freeze_layers or train_only, not both")
    if freeze_layers:
        train_only = [p for p in HEAD_LAYERS if any(n.startswith(p + ".") for n in model.params)]
    return select_trainable(model.params, train_only)
