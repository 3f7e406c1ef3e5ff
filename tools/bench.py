"""Benchmark npvit against PyTorch (timm), measured side by side in one run.

    python tools/bench.py                 # the full table (B/16 forward at batch 1, 8, 32; S/16 train step)
    python tools/bench.py --quick         # batch 1 and the train step only, fewer repeats
    python tools/bench.py --backend cupy  # on a GPU (torch on cuda)

Method (see the research notes: this machine's speed drifts by +-15% over minutes, so only paired
ratios mean much): each round runs npvit and torch back to back, alternating which goes first, with
a short pause before each so spinning BLAS/OpenMP workers go idle.  The ratio is taken per round and
the median over rounds is reported.  Peak memory is measured in a fresh process per framework and
case (peak RSS of the run above the RSS before the model was built; weights included for both).
The matmul floor is the model's GEMM FLOPs divided by the GEMM rate, and the GEMM rate is paired
too: measured in every round just before npvit's step, so "% floor" (floor / npvit time, median
over rounds) compares numbers taken under the same machine speed.

NumPy's speed depends on the kernel family OpenBLAS runs, printed in the header.  OpenBLAS picks it
from the CPU unless OPENBLAS_CORETYPE forces one; some machines set that variable (and
OPENBLAS_L2_SIZE) for older OpenBLAS builds, which slows a current NumPy.  To measure what a user's
NumPy does, unset both for this command alone:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...
"""
import argparse
import json
import os
import subprocess
import sys
import time

# Threads must be fixed before numpy/torch load their thread pools.
THREADS = os.environ.get("NPVIT_BENCH_THREADS", "2")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

CASES = {
    # name: (model, batch, kind)
    "B/16 fwd b1": ("vit_base_patch16_224", 1, "forward"),
    "B/16 fwd b8": ("vit_base_patch16_224", 8, "forward"),
    "B/16 fwd b32": ("vit_base_patch16_224", 32, "forward"),
    "S/16 train b8": ("vit_small_patch16_224", 8, "train"),
}


def gemm_flops(model_name, batch, kind):
    """Multiply-add FLOPs (2*M*N*K) of the model's GEMMs: linear layers, patch embed, attention."""
    import npvit

    c = npvit.model.variants.variant_config(model_name)
    N, D, H = c.num_patches + c.num_prefix_tokens, c.embed_dim, c.mlp_hidden
    per_block = 2 * N * (D * 3 * D + D * D + 2 * D * H) + 2 * 2 * N * N * D
    patch = 2 * c.num_patches * D * c.in_c * c.patch_size[0] * c.patch_size[1]
    fwd = batch * (c.depth * per_block + patch + 2 * D * c.num_classes)
    return fwd * 3 if kind == "train" else fwd  # backward = two GEMMs per forward GEMM


def measure_gemm_rate(backend, reps=3):
    """Sustained float32 GEMM rate (FLOP/s) on the shapes that dominate ViT-B/16 (fc1 at batch 8):
    the best of ``reps`` runs of 10 products, with NumPy's BLAS on all its threads."""
    xp = backend.xp
    a = backend.from_numpy(np.random.default_rng(0).standard_normal((8 * 197, 768)).astype(np.float32))
    b = backend.from_numpy(np.random.default_rng(1).standard_normal((768, 3072)).astype(np.float32))
    out = xp.empty((a.shape[0], b.shape[1]), dtype=xp.float32)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(10):
            xp.matmul(a, b, out=out)
        sync(backend)
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def sync(backend):
    if backend.name == "cupy":
        backend.xp.cuda.get_current_stream().synchronize()


# --- the two contestants -----------------------------------------------------------------------
def make_npvit(model_name, batch, kind, backend):
    import npvit

    model = npvit.create_model(model_name, backend=backend, seed=0)
    be = model.backend
    x = be.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
    labels = be.from_numpy(np.arange(batch) % model.config.num_classes)

    if kind == "forward":
        def step():
            model.forward(x)
    else:
        def step():
            logits = model.forward(x, train=True, grad=True)
            _, dlogits = npvit.cross_entropy(logits, labels)
            model.backward(dlogits, input_grad=False)  # torch's x does not require grad either
    return lambda: (step(), sync(be))


def make_torch(model_name, batch, kind, backend):
    import timm
    import torch

    torch.set_num_threads(int(THREADS))
    device = "cuda" if backend == "cupy" else "cpu"
    model = timm.create_model(model_name, pretrained=False).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.arange(batch, device=device) % 1000

    def done():
        if device == "cuda":
            torch.cuda.synchronize()

    if kind == "forward":
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
            done()
    else:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            done()
    return step


def timed(fn, pause):
    time.sleep(pause)
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired(case, backend, rounds, pause):
    """Median npvit and torch times, the median per-round ratio, and the median per-round share of
    the matmul floor (GEMM FLOPs over the GEMM rate measured in the same round) in npvit's time."""
    model_name, batch, kind = CASES[case]
    flops = gemm_flops(model_name, batch, kind)
    ours, theirs = make_npvit(model_name, batch, kind, backend), make_torch(model_name, batch, kind, backend.name)
    ours(), theirs()  # warm-up: allocators, thread pools, first-touch of weights
    t_ours, t_theirs, floors = [], [], []
    for r in range(rounds):
        order = [(ours, t_ours), (theirs, t_theirs)]
        for fn, sink in (order if r % 2 == 0 else order[::-1]):
            if fn is ours:
                floors.append(flops / measure_gemm_rate(backend))
            sink.append(timed(fn, pause))
    ratios = [a / b for a, b in zip(t_ours, t_theirs)]
    shares = [f / t for f, t in zip(floors, t_ours)]
    return {"ours": float(np.median(t_ours)), "theirs": float(np.median(t_theirs)), "ratio": float(np.median(ratios)),
            "floor": float(np.median(floors)), "share": float(np.median(shares))}


# --- memory, one fresh process per measurement -----------------------------------------------------
def _proc_status_kib(field):
    """VmRSS / VmHWM from /proc: unlike ru_maxrss, VmHWM starts afresh at exec (a forked child's
    ru_maxrss begins at its parent's size, which would hide the model's own memory)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory_probe(framework, case, backend):
    """Run in a child process: build, run one step, print the peak RSS growth in MiB."""
    model_name, batch, kind = CASES[case]
    import npvit  # noqa: F401  (import cost is not the model's memory)
    if framework == "torch":
        import timm  # noqa: F401
    before = _proc_status_kib("VmRSS")
    make = make_npvit if framework == "npvit" else make_torch
    step = make(model_name, batch, kind, backend)
    step()
    print(json.dumps({"peak_mib": (_proc_status_kib("VmHWM") - before) / 1024}))


def peak_memory(framework, case, backend):
    out = subprocess.run([sys.executable, __file__, "--memory-probe", framework, case, "--backend", backend],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def import_time():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import npvit"], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), check=True)
    last = [line for line in out.stderr.splitlines() if line.rstrip().endswith("| npvit")]
    return int(last[-1].split("|")[1]) / 1e6 if last else float("nan")


def load_times(reps=3):
    """Best-of-``reps`` seconds for npvit.load of a ViT-B/16 from npvit's .npz and from .safetensors."""
    import tempfile

    import npvit
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true", help="batch 1 and the train step, 3 rounds")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-probe", nargs=2, metavar=("FRAMEWORK", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return peak_memory_probe(*args.memory_probe, args.backend)

    import npvit

    backend = npvit.get_backend(args.backend)
    cases = args.cases or (["B/16 fwd b1", "S/16 train b8"] if args.quick else list(CASES))
    rounds = 3 if args.quick else args.rounds
    rate = measure_gemm_rate(backend, reps=5)
    forced = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
    kernel = getattr(getattr(backend, "blas", None), "corename", None)
    print(f"npvit {npvit.__version__} on {args.backend}, {THREADS} threads; numpy {np.__version__}"
          + (f" (OpenBLAS kernels: {kernel}{', forced by ' + str(forced) if forced else ''})" if kernel else "")
          + f"; GEMM rate measured now: {rate / 1e9:.0f} GFLOP/s; import npvit: {import_time() * 1e3:.0f} ms")
    header = f"{'case':<15}{'npvit ms':>10}{'torch ms':>10}{'ratio':>8}{'floor ms':>10}{'% floor':>9}"
    if not args.no_memory:
        header += f"{'npvit MiB':>11}{'torch MiB':>11}"
    print(header)
    for case in cases:
        m = paired(case, backend, rounds, args.pause)
        row = (f"{case:<15}{m['ours'] * 1e3:>10.1f}{m['theirs'] * 1e3:>10.1f}{m['ratio']:>8.2f}"
               f"{m['floor'] * 1e3:>10.1f}{m['share']:>9.0%}")
        if not args.no_memory:
            row += f"{peak_memory('npvit', case, args.backend):>11.0f}{peak_memory('torch', case, args.backend):>11.0f}"
        print(row, flush=True)
    print("ratio = npvit time / torch time (median of per-round ratios; < 1 means npvit is faster); "
          "% floor = matmul floor / npvit time (median of per-round shares)")
    loads = load_times()
    print("load ViT-B/16: " + ", ".join(f"{kind} {sec * 1e3:.0f} ms" for kind, sec in loads.items()))


if __name__ == "__main__":
    main()
