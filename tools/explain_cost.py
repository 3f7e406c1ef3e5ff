"""What seeing inside costs: attention maps and explanations against a plain forward, timed in pairs.

    python tools/explain_cost.py                       # ViT-B/16, batch 8, float32, 2 threads, 7 rounds
    python tools/explain_cost.py --rounds 3 --batch 2 --model vit_tiny_patch16_224

Each round calls every case once, in an order rotated round by round, after a short pause; a case's
ratio is its time over the plain forward's in the same round (the machine is shared and its speed
drifts, so only same-round ratios are compared).  Printed: per case the median wall time, the
median ratio and its range over the rounds, and the same ratio in CPU time (this process's, all
threads: less disturbed by other processes taking the cores, which stretch wall times).  The cases:

    forward              model.forward(x): the fused eval path
    observed, no maps    model.forward(x, observer=Observer()): an observer that wants nothing, the
                         cost of an observed pass's schedule alone (the batch run whole, every row
                         of the last block computed)
    attention_maps all   model.attention_maps(x): every block's (B, H, N, N) probabilities kept
    attention_maps last  model.attention_maps(x, layers=-1)
    rollout              npvit.explain.rollout(model, x)
    forward+backward     model.forward(x, grad=True) + model.backward(onehot, input_grad=False),
                         the floor of the gradient methods
    gradient_attention   npvit.explain.gradient_attention(model, x)
    input_gradients      npvit.explain.input_gradients(model, x)

Threads: NPVIT_NUM_THREADS and OPENBLAS_NUM_THREADS are set to --threads before NumPy loads.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--pause", type=float, default=0.5, help="seconds of rest before each call")
    p.add_argument("--json", metavar="PATH", help="also write every timing here")
    args = p.parse_args(argv)
    for var in ("NPVIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import numpy as np

    import npvit
    from npvit import explain
    from npvit.model.observe import Observer

    model = npvit.create_model(args.model, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, *model.config.img_size)).astype(np.float32)
    onehot = np.zeros((args.batch, model.config.num_classes), np.float32)
    onehot[:, 0] = 1

    def forward_backward():
        model.forward(x, grad=True)
        model.backward(onehot, input_grad=False)

    cases = {
        "forward": lambda: model.forward(x),
        "observed, no maps": lambda: model.forward(x, observer=Observer()),
        "attention_maps all": lambda: model.attention_maps(x),
        "attention_maps last": lambda: model.attention_maps(x, layers=-1),
        "rollout": lambda: explain.rollout(model, x),
        "forward+backward": forward_backward,
        "gradient_attention": lambda: explain.gradient_attention(model, x),
        "input_gradients": lambda: explain.input_gradients(model, x),
    }
    names = list(cases)
    for f in cases.values():          # warm-up: allocator, thread pool, OpenBLAS buffers
        f()
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    load = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            time.sleep(args.pause)
            t0, c0 = time.perf_counter(), time.process_time()
            cases[n]()
            times[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds}: forward {times['forward'][-1] * 1e3:.0f} ms, "
              f"load {load[-1]:.1f}", file=sys.stderr, flush=True)
    base, cpu_base = np.array(times["forward"]), np.array(cpu["forward"])
    print(f"npvit {npvit.__version__}, numpy {np.__version__}; {args.model}, batch {args.batch}, float32, "
          f"{args.threads} threads, {args.rounds} rounds; load average {min(load):.1f}-{max(load):.1f}")
    print(f"{'case':<22}{'median ms':>10}{'x forward':>11}{'range':>12}{'CPU x forward':>15}{'range':>12}")
    for n in names:
        t = np.array(times[n])
        ratio, cpu_ratio = t / base, np.array(cpu[n]) / cpu_base
        print(f"{n:<22}{np.median(t) * 1e3:>10.0f}{np.median(ratio):>11.2f}"
              f"{f'{ratio.min():.2f}-{ratio.max():.2f}':>12}{np.median(cpu_ratio):>15.2f}"
              f"{f'{cpu_ratio.min():.2f}-{cpu_ratio.max():.2f}':>12}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "times_s": times, "cpu_s": cpu, "load": load}, indent=1))


if __name__ == "__main__":
    main()
