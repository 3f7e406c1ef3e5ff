"""One contestant of tools/bench.py, in a process of its own, driven by the parent over a pipe.

    python tools/bench_worker.py     # reads pickled (command, kwargs) on stdin, answers on stdout

A worker builds one contestant for one case, then answers the parent's commands:

    setup(spec)         build it (first command; spec: see ``setup``); returns facts about it
    check()             run one step and return its outputs (logits; loss and gradients when training)
    time(pause, gemm)   sleep ``pause`` s, then time one step; with ``gemm``, first measure NumPy's GEMM rate
    peak()              peak RSS growth in MiB since just before the build (for a fresh memory probe)
    info(backend)       npvit's version, models, OpenBLAS kernel family and GEMM rate (no setup needed)
    load_times()        best-of-3 npvit.load of a ViT-B/16 from .npz and .safetensors (no setup needed)
    quit()

Contestants: ``npvit`` (imported from the folder ``spec["npvit_root"]``, so two versions of npvit
can run side by side in two workers), ``torch`` (timm, eager), ``ort`` (ONNX Runtime),
``ov-latency`` and ``ov-throughput`` (OpenVINO).  Each imports only its own framework, so
thread pools and allocators do not meet, and peak memory is the contestant's alone.
"""
import os
import pickle
import sys
import time
import traceback

import numpy as np

INPUT_SEED = 0  # every contestant draws the same input batch from this seed


def _status_kib(field):
    """VmRSS / VmHWM from /proc: unlike ru_maxrss, VmHWM starts afresh at exec (a forked child's
    ru_maxrss begins at its parent's size, which would hide the model's own memory)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_s():
    """CPU seconds all processes on this machine have used (non-idle time in /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK  # user..steal, less idle and iowait


def make_input(batch):
    return np.random.default_rng(INPUT_SEED).standard_normal((batch, 3, 224, 224)).astype(np.float32)


def import_npvit(root):
    """Import npvit from ``root`` (a checkout or an extracted revision), never from elsewhere."""
    sys.path.insert(0, os.path.abspath(root))
    import npvit

    where = os.path.dirname(os.path.dirname(os.path.abspath(npvit.__file__)))
    if os.path.realpath(where) != os.path.realpath(root):
        raise RuntimeError(f"imported npvit from {where}, expected {root}")
    return npvit


def gemm_rate(xp, sync, reps=3):
    """Sustained float32 GEMM rate (FLOP/s) on the shapes that dominate ViT-B/16 (fc1 at batch 8):
    the best of ``reps`` runs of 10 products, with the BLAS on all its threads."""
    a = xp.asarray(np.random.default_rng(0).standard_normal((8 * 197, 768)).astype(np.float32))
    b = xp.asarray(np.random.default_rng(1).standard_normal((768, 3072)).astype(np.float32))
    out = xp.empty((a.shape[0], b.shape[1]), dtype=xp.float32)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(10):
            xp.matmul(a, b, out=out)
        sync()
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def _cupy_sync(xp):
    return lambda: xp.cuda.get_current_stream().synchronize()


def kernel_family(backend):
    """OpenBLAS's kernel family ("Haswell", "SkylakeX", ...) as npvit.backends.openblas reports it."""
    blas = getattr(backend, "blas", None)
    if blas is None:
        try:
            from npvit.backends.openblas import OpenBlas

            blas = OpenBlas()
        except ImportError:
            return None
    return getattr(blas, "corename", None)


# --- the contestants: each returns (step, outputs, facts) ------------------------------------------
# step() runs one forward (or training step) to completion; outputs() runs one and returns what the
# parent compares: {"logits": array} and, for training, "loss" and "grads" {state-dict name: array};
# facts is a dict for the report (versions; for npvit also "rate", its GEMM-rate probe).

def build_npvit(spec):
    npvit = import_npvit(spec["npvit_root"])
    os.environ["NPVIT_NUM_THREADS"] = str(spec["threads"])  # read when the backend is first made, below
    model = npvit.create_model(spec["model"], backend=spec["backend"], seed=0, **spec.get("knobs", {}))
    if spec.get("weights"):
        with np.load(spec["weights"]) as f:
            model.load_state_dict({name: f[name] for name in f.files})
    be = model.backend
    to_numpy = getattr(be, "to_numpy", np.asarray)
    sync = _cupy_sync(be.xp) if be.name == "cupy" else (lambda: None)
    x = be.xp.asarray(make_input(spec["batch"]))
    labels = be.xp.asarray(np.arange(spec["batch"]) % spec["classes"])

    if spec["kind"] == "forward":
        def run():
            return {"logits": model.forward(x)}
    else:
        def run():
            logits = model.forward(x, train=True, grad=True)
            loss, dlogits = npvit.cross_entropy(logits, labels)
            _, grads = model.backward(dlogits, input_grad=False)  # torch's x does not require grad either
            return {"logits": logits, "loss": loss, "grads": grads}

    def step():
        run()
        sync()

    def outputs():
        out = run()
        return {k: ({n: to_numpy(g) for n, g in v.items()} if k == "grads" else
                    float(v) if k == "loss" else to_numpy(v)) for k, v in out.items()}

    rate = (lambda: gemm_rate(be.xp, sync))
    return step, outputs, {"rate": rate, "npvit": npvit.__version__, "file": npvit.__file__}


def build_torch(spec):
    import timm
    import torch

    torch.set_num_threads(spec["threads"])
    device = "cuda" if spec["backend"] == "cupy" else "cpu"
    model = timm.create_model(spec["model"], pretrained=False, **spec.get("knobs", {}))
    if spec.get("weights"):
        with np.load(spec["weights"]) as f:
            model.load_state_dict({name: torch.from_numpy(f[name]) for name in f.files})
    model = model.to(device)
    x = torch.from_numpy(make_input(spec["batch"])).to(device)
    labels = (torch.arange(spec["batch"]) % spec["classes"]).to(device)

    def done():
        if device == "cuda":
            torch.cuda.synchronize()

    if spec["kind"] == "forward":
        model.eval()

        def run():
            with torch.inference_mode():
                out = model(x)
            done()
            return {"logits": out}
    else:
        model.train()

        def run():
            model.zero_grad(set_to_none=True)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            done()
            return {"logits": logits, "loss": loss}

    def outputs():
        out = run()
        result = {"logits": out["logits"].detach().cpu().numpy()}
        if "loss" in out:
            result["loss"] = float(out["loss"])
            result["grads"] = {n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters()
                               if p.grad is not None}
        return result

    return run, outputs, {"torch": torch.__version__, "timm": timm.__version__}


def build_ort(spec):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(spec["onnx"], opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = make_input(spec["batch"])

    def run():
        return sess.run(None, {name: x})[0]

    return run, (lambda: {"logits": run()}), {"onnxruntime": ort.__version__}


def _ov_compile(core, path, batch, hint, threads):
    import openvino as ov

    model = core.read_model(path)
    model.reshape(ov.PartialShape([ov.Dimension(batch) if batch else ov.Dimension(), 3, 224, 224]))  # static if it can
    return core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": str(threads),
                                             "INFERENCE_PRECISION_HINT": "f32"})


_OV_CORE = []


def ov_core():
    """One OpenVINO Core with its CPU plugin loaded (before the memory baseline: code, not model)."""
    if not _OV_CORE:
        import openvino as ov

        core = ov.Core()
        core.get_property("CPU", "FULL_DEVICE_NAME")
        _OV_CORE.append(core)
    return _OV_CORE[0]


def build_ov(spec):
    import openvino as ov

    core = ov_core()
    x, B = make_input(spec["batch"]), spec["batch"]
    facts = {"openvino": ov.get_version()}
    if spec["contestant"] == "ov-latency":
        req = _ov_compile(core, spec["onnx"], B, "LATENCY", spec["threads"]).create_infer_request()

        def run():
            req.infer({0: x}, share_inputs=True)
            return req.get_output_tensor(0).data.copy()

        return run, (lambda: {"logits": run()}), facts

    # Throughput mode: the batch split over OpenVINO's optimal number of infer requests, run async.
    nireq = spec.get("nireq")
    if not nireq:  # ask OpenVINO (a compile of its own, so the parent passes it to memory probes)
        compiled = _ov_compile(core, spec["onnx"], B, "THROUGHPUT", spec["threads"])
        nireq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        del compiled
    n = max(1, min(nireq, B))
    chunks = np.array_split(x, n)
    sizes = {len(c) for c in chunks}
    compiled = _ov_compile(core, spec["onnx"], sizes.pop() if len(sizes) == 1 else None, "THROUGHPUT",
                           spec["threads"])
    queue = ov.AsyncInferQueue(compiled, n)
    results = [None] * n

    def keep(request, i):
        results[i] = request.get_output_tensor(0).data.copy()

    queue.set_callback(keep)

    def run():
        for i, chunk in enumerate(chunks):
            queue.start_async({0: chunk}, userdata=i, share_inputs=True)
        queue.wait_all()
        return np.concatenate(results)

    facts.update(nireq=nireq, requests=n)
    return run, (lambda: {"logits": run()}), facts


BUILDERS = {"npvit": build_npvit, "torch": build_torch, "ort": build_ort,
            "ov-latency": build_ov, "ov-throughput": build_ov}
IMPORTS = {  # imported before the memory baseline: a framework's code is not the model's memory
    "npvit": lambda spec: import_npvit(spec["npvit_root"]),
    "torch": lambda spec: __import__("timm"),
    "ort": lambda spec: __import__("onnxruntime"),
    "ov-latency": lambda spec: ov_core(),
    "ov-throughput": lambda spec: ov_core(),
}


# --- commands that need no contestant ---------------------------------------------------------------
def info(npvit_root, backend):
    npvit = import_npvit(npvit_root)
    be = npvit.get_backend(backend)
    sync = _cupy_sync(be.xp) if backend == "cupy" else (lambda: None)
    return {"version": npvit.__version__, "models": list(npvit.list_models()), "numpy": np.__version__,
            "kernel": kernel_family(be), "rate": gemm_rate(be.xp, sync, reps=5)}


def load_times(npvit_root, reps=3):
    import tempfile

    npvit = import_npvit(npvit_root)
    from npvit.formats.safetensors import write_safetensors

    model = npvit.create_model("vit_base_patch16_224")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"npz": os.path.join(tmp, "b16.npz"), "safetensors": os.path.join(tmp, "b16.safetensors")}
        model.save(paths["npz"])
        write_safetensors(paths["safetensors"], {n: np.asarray(v) for n, v in model.state_dict().items()})
        for kind, path in paths.items():
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                npvit.load(path)
                best = min(best, time.perf_counter() - t)
            times[kind] = best
    return times


def main():
    answer = os.fdopen(os.dup(1), "wb")  # the pipe to the parent ...
    os.dup2(2, 1)                          # ... and anything a library prints goes to the log instead
    requests = sys.stdin.buffer
    state = {}
    while True:
        try:
            cmd, kw = pickle.load(requests)
        except EOFError:
            return
        try:
            if cmd == "quit":
                return
            if cmd == "setup":
                spec = kw["spec"]
                IMPORTS[spec["contestant"]](spec)
                state["before"] = _status_kib("VmRSS")
                step, outputs, facts = BUILDERS[spec["contestant"]](spec)
                state.update(step=step, outputs=outputs, rate=facts.pop("rate", None))
                result = facts
            elif cmd == "check":
                result = state["outputs"]()
            elif cmd == "time":
                rate = None
                if kw.get("gemm") and state["rate"]:  # after a pause of its own: the last contestant's
                    time.sleep(kw["pause"])           # spinning threads would slow it
                    rate = state["rate"]()
                time.sleep(kw["pause"])
                busy, cpu, t = _busy_s(), time.process_time(), time.perf_counter()
                state["step"]()
                t, cpu, busy = time.perf_counter() - t, time.process_time() - cpu, _busy_s() - busy
                # other processes' CPU use during the step, in cores (perf-baseline.md section 0)
                result = {"s": t, "rate": rate, "other": max(0.0, busy - cpu) / t}
            elif cmd == "peak":
                result = (_status_kib("VmHWM") - state["before"]) / 1024
            elif cmd == "info":
                result = info(**kw)
            elif cmd == "load_times":
                result = load_times(**kw)
            else:
                raise ValueError(f"unknown command {cmd!r}")
            reply = ("ok", result)
        except Exception:  # reported to the parent, which decides whether it is fatal
            reply = ("error", traceback.format_exc())
        pickle.dump(reply, answer, protocol=pickle.HIGHEST_PROTOCOL)
        answer.flush()


if __name__ == "__main__":
    main()
