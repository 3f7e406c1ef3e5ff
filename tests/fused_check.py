"""How closely an eval pass of the fused kernels must follow the op-by-op reference path
(tests/test_inference.py for ViT, tests/test_swin.py for Swin).

The two paths sum in different orders (fused vs separate passes, chunked vs whole GEMMs), so
each carries its own rounding, which the model's conditioning magnifies: a LayerNorm divides a row
by its spread, and a row whose values nearly agree turns a 4e-6 difference into 3e-4 (float32).  A
fixed tolerance on the difference of the two paths was therefore either loose or flaky (2e-6 of
the logits and 2e-5 of the features, float32, failed within 600 hypothesis draws on every NumPy
build).  So:

* float32: each path is measured against the float64 truth (a float64 twin with the same float32
  weights and input), and the fused path's error may be at most ``RATIO`` times the larger of the
  reference path's own error and a floor for when the reference happens to land close: one float32
  rounding of the final norm's input rows, magnified as this draw's final LayerNorm and head
  magnify it (``rounding_floors``).
* float64 (no truth to measure against): the paths may differ by 1e-12 of the largest logit and
  1e-11 of the largest feature (at least 1), or by ``RATIO`` times the float64 floor where a draw
  magnifies more than that.

A real mistake (a missing bias, a wrong head or token) is an O(1) error.

``RATIO``: over 600 ViT draws on each NumPy build CI runs (1.24.4, 2.4.6, 2.5.5; 510-650 float32
comparisons each) the fused error over that scale was at most 2.6 (99th percentile 1.0-1.2), and
over 400 Swin draws (2.4.6; 414 comparisons) 2.1; over the reference path's error alone it reached
178.  In float64 the largest difference was 0.11 of its bound.
"""
import numpy as np

from npvit.model.observe import Recorder

RATIO = 8
FLOAT64_TOLERANCES = (1e-12, 1e-11)   # logits, features: relative to the largest value (at least 1)


def assert_fused_matches_reference(model, x):
    """Logits and forward_features of ``model`` (fused path on) against its reference path, as the
    module docstring says; ``x`` a host array (cast to the model's dtype)."""
    be = model.backend
    x = np.asarray(x, dtype=model.dtype)
    xb = be.from_numpy(x)
    fast = be.to_numpy(model.forward(xb)), be.to_numpy(model.forward_features(xb))
    model.fast_inference = False
    ref = be.to_numpy(model.forward(xb)), be.to_numpy(model.forward_features(xb))
    model.fast_inference = True
    twin = type(model)(model.config, dtype="float64", seed=0)
    twin.load_state_dict({name: be.to_numpy(v).astype(np.float64) for name, v in model.state_dict().items()})
    twin.fast_inference = False
    x64 = x.astype(np.float64)
    floors = rounding_floors(twin, x64, np.finfo(model.dtype).eps / 2)
    if model.dtype == "float64":
        for got, want, tol, floor in zip(fast, ref, FLOAT64_TOLERANCES, floors):
            difference = np.abs(got - want).max()
            assert difference <= max(tol * max(np.abs(want).max(), 1.0), RATIO * floor), (difference, floor)
        return
    truth = twin.forward(x64), twin.forward_features(x64)
    for got, want, true, floor in zip(fast, ref, truth, floors):
        error, reference_error = np.abs(got - true).max(), np.abs(want - true).max()
        assert error <= RATIO * max(reference_error, floor), (error, reference_error, floor)


def rounding_floors(twin, x, unit_roundoff):
    """(logits, features) for a float64 model: one rounding (``unit_roundoff``) of the rows the
    final LayerNorm reads (the last block's or stage's output), magnified as that norm and the head
    magnify it.  A LayerNorm's Jacobian has norm at most 1 / s on a row of spread s, so an error
    there grows by up to |w| sqrt(D) / s; the head's linear layers by their largest absolute row
    sum (tanh, averaging and pooling do not grow it)."""
    cfg, p = twin.config, twin.params
    last = cfg.depth - 1 if hasattr(cfg, "depth") else len(cfg.depths) - 1     # ViT: blocks; Swin: stages
    rec = Recorder(indices=[last])
    twin.forward(x, observer=rec)                       # an observer sees every row of every block
    rows = rec.outputs[last]
    rows = rows.reshape(rows.shape[0], -1, rows.shape[-1])                                 # (B, N, D)
    gain = np.abs(p["norm.weight"]).max() * np.sqrt(rows.shape[-1]) / np.sqrt(rows.var(axis=-1) + cfg.norm_eps)
    token_head = getattr(cfg, "classifier", None) == "token"
    read = gain[:, :cfg.num_prefix_tokens] if token_head else gain                       # rows the head reads
    row_sum = lambda name: np.abs(p[name]).sum(axis=1).max()
    head = max([row_sum(n) for n in ("head.weight", "head_dist.weight", "head.fc.weight") if n in p] + [1.0])
    if "pre_logits.fc.weight" in p:
        head *= row_sum("pre_logits.fc.weight")
    unit = unit_roundoff * max(np.abs(rows).max(), 1.0)
    return unit * max(read.max(), 1.0) * max(head, 1.0), unit * max(gain.max(), 1.0)
