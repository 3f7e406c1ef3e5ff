"""Comparing an npvit model with a PyTorch reference carrying the same weights (see the tolerances in
test_parity_torch.py's docstring)."""
import numpy as np

torch = __import__("pytest").importorskip("torch")


def close(ours, ref, rel, what=""):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    # Absolute floor 1e-12: where the true value is exactly zero (LayerNorm over 2 features has a
    # zero input gradient) both sides hold only float64 rounding noise (~1e-13).
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(ours - ref).max()
    assert err <= rel * scale + 1e-12, f"{what}: max error {err:.2e} for max |ref| {scale:.2e} (rel {rel:.0e})"


def run_parity(npv, ref, ref_grads, x, train=False, seed=0):
    """Compare forward (float64 model) and all gradients; ``ref`` is a float64 torch model."""
    be = npv.backend
    rng = np.random.default_rng(seed)
    out = npv.forward(be.from_numpy(x), train=train, grad=True)
    xt = torch.tensor(x, requires_grad=True)
    ref.train(train)
    ref_out = ref(xt)
    ref_out = getattr(ref_out, "logits", ref_out)  # Hugging Face wraps its logits in an output object
    outs, ref_outs = (out, ref_out) if isinstance(out, tuple) else ((out,), (ref_out,))
    assert len(outs) == len(ref_outs)
    dys = [rng.standard_normal(tuple(o.shape)) for o in outs]
    for o, r in zip(outs, ref_outs):
        close(be.to_numpy(o), r.detach().numpy(), 1e-10, "logits")
    torch.autograd.backward([r for r in ref_outs], [torch.tensor(d) for d in dys])
    dout = tuple(be.from_numpy(d) for d in dys) if isinstance(out, tuple) else be.from_numpy(dys[0])
    dx, grads = npv.backward(dout)
    close(be.to_numpy(dx), xt.grad.numpy(), 1e-10, "input gradient")
    theirs = ref_grads(ref)
    assert set(grads) == set(theirs), set(grads) ^ set(theirs)
    for name in grads:
        close(be.to_numpy(grads[name]), theirs[name], 1e-10, name)


def float32_logits_match(npv64, make_ref, x):
    """The same weights in float32 on both sides give logits within float32 rounding."""
    npv32 = type(npv64)(npv64.config, dtype="float32", backend=npv64.backend)
    npv32.load_state_dict({n: npv64.backend.to_numpy(v) for n, v in npv64.params.items()})
    ref32 = make_ref(npv32, torch.float32).eval()
    with torch.no_grad():
        ref = ref32(torch.tensor(x, dtype=torch.float32))
    ref = getattr(ref, "logits", ref).numpy()
    close(npv32.backend.to_numpy(npv32.forward(npv32.backend.from_numpy(x.astype(np.float32)))), ref, 2e-5,
          "float32 logits")
