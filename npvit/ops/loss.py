"""Softmax cross-entropy with optional label smoothing, mean over the batch.

    target = (1 - eps) * onehot(label) + eps / K          (PyTorch's definition of smoothing)
    loss   = mean_b( -sum_k target_bk * log_softmax(logits)_bk )
    dlogits = (softmax(logits) - target) / B

Returns the loss and its gradient together: the gradient is nearly free once softmax is known.
"""


def cross_entropy(logits, labels, label_smoothing=0.0):
    """``logits`` (B, K) float array, ``labels`` (B,) integer classes -> (loss float, dlogits)."""
    xp = _namespace(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}")
    labels = xp.asarray(labels)
    B, K = logits.shape
    if labels.shape != (B,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be {B} integer class indices, got dtype {labels.dtype} shape {tuple(labels.shape)}"
        )
    if B and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise ValueError(
            f"labels must lie in [0, {K}) for a {K}-class head, got values from {int(labels.min())} "
            f"to {int(labels.max())}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z                                          # (B, K)
    target = xp.full_like(logits, label_smoothing / K)
    target[xp.arange(B), labels] += 1.0 - label_smoothing
    loss = -(target * log_probs).sum() / B
    dlogits = (xp.exp(log_probs) - target) / B
    return float(loss), dlogits


def _namespace(x):
    from ..backends import array_library_of, get_backend

    return get_backend(array_library_of(x)).xp
