"""Benchmark npvit against PyTorch, ONNX Runtime and OpenVINO, or against another revision of npvit.

    bash tools/bench.sh                       # every case against every peer that imports (builds the bench venv once)
    bash tools/bench.sh --quick               # B/16 forward at batch 1 and the S/16 train step, 3 rounds, no load times
    bash tools/bench.sh --peers torch,ort --cases "B/16 fwd b1,B/16 fwd b8" --rounds 3 --no-memory
    bash tools/bench.sh --ab 8420ded --cases "B/16 fwd b1,S/16 train b8"    # npvit at 8420ded (A) vs the working tree (B)
    bash tools/bench.sh --one-thread --peers torch,ort --cases "B/16 fwd b1"  # what perfect scaling would give
    python tools/bench.py --backend cupy      # on a GPU (torch on cuda; the CPU engines sit out)

Contestants (--peers, default every one that imports; with --ab, none unless asked):
  npvit          the working tree, or --npvit REV (with --ab REV: npvit at REV as "A" beside it as "B";
                 a revision is taken with git archive, and a folder holding npvit/ also works)
  torch          timm, eager, torch.set_num_threads(threads); the only training peer
  ort            ONNX Runtime, CPUExecutionProvider, intra_op threads, inter_op 1, ORT_ENABLE_ALL
  ov-latency     OpenVINO, PERFORMANCE_HINT LATENCY, INFERENCE_NUM_THREADS threads, f32, static batch
  ov-throughput  OpenVINO, PERFORMANCE_HINT THROUGHPUT: the batch split over its optimal number of
                 async infer requests (one request at batch 1)
  npvit-1t       with --one-thread: npvit on one thread, in the same rounds.  Its time over the thread
                 count, against each peer's, is what npvit would take if its threads scaled perfectly:
                 at or above a target, better scheduling alone cannot meet it.
Everyone gets the same weights, timm's model after torch.manual_seed(0): npvit loads timm's state dict
(npvit.create_model(name) + load_state_dict), ONNX Runtime and OpenVINO read its ONNX export
(opset 18, dynamo=False, dynamic batch), and the same input batch.  Before timing, every contestant's
logits (and, for training, loss and gradients) are compared with timm's and the deviation printed.

Method (this machine's speed drifts by +-15% over minutes, so only paired ratios mean much): every
contestant runs in a persistent process of its own (tools/bench_worker.py: two versions of npvit
cannot share one process, and thread pools stay apart); after two untimed runs, each round calls every
contestant once, the order rotated by one each round, with a short pause before each call so spinning
BLAS/OpenMP workers go idle.  Ratios are taken within a round (npvit time / peer time, or B / A) and
the median over rounds is reported, with the range.  Each timed call also records how much CPU other
processes used meanwhile (/proc/stat less the worker's own CPU time); the report gives the median, and
--max-load CORES reruns (up to 3x --rounds in all) the rounds where any call saw more.

The matmul floor is the case's GEMM FLOPs (counted by torch's FlopCounterMode on timm's model with
attention written as two products, backward included for training) over NumPy's float32 GEMM rate,
measured in every round just before each npvit step, so "% floor" (floor / npvit time, median over
rounds) compares numbers taken at the same machine speed.

Peak memory is measured in a fresh process per contestant and case: the peak RSS of one step above
the RSS after importing the framework, before the model is built (weights included; npvit and torch
build from their seeded init, the engines load the ONNX file).

NumPy's speed depends on the kernel family OpenBLAS runs, printed in the header.  OpenBLAS picks it
from the CPU unless OPENBLAS_CORETYPE forces one; some machines set that variable (and
OPENBLAS_L2_SIZE) for older OpenBLAS builds, which slows a current NumPy.  To measure what a user's
NumPy does, unset both for this command alone:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash tools/bench.sh
"""
import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "bench_worker.py")


# --- the cases: adding a model is one entry ---------------------------------------------------------
@dataclass(frozen=True)
class Case:
    model: str  # timm's name; npvit builds it with npvit.create_model(model) and loads timm's state dict
    batch: int
    kind: str   # "forward" (eval, no gradients) or "train" (forward, cross-entropy, backward)
    knobs: dict = field(default_factory=dict)  # config overrides, passed to timm's and npvit's create_model


CASES = {
    "B/16 fwd b1": Case("vit_base_patch16_224", 1, "forward"),
    "B/16 fwd b8": Case("vit_base_patch16_224", 8, "forward"),
    "B/16 fwd b32": Case("vit_base_patch16_224", 32, "forward"),
    "S/16 train b8": Case("vit_small_patch16_224", 8, "train"),
    # Skipped with a message until npvit knows the model (npvit.list_models()).
    "Swin-T fwd b1": Case("swin_tiny_patch4_window7_224", 1, "forward"),
    "Swin-T fwd b8": Case("swin_tiny_patch4_window7_224", 8, "forward"),
    "Swin-T fwd b32": Case("swin_tiny_patch4_window7_224", 32, "forward"),
    # timm's Swin-T trains with stochastic depth (rate 0.1): each library would draw its own masks, so
    # the outputs could not be compared; off on both sides (ViT's default is already 0).
    "Swin-T train b8": Case("swin_tiny_patch4_window7_224", 8, "train", {"drop_path_rate": 0.0}),
}
QUICK = ("B/16 fwd b1", "S/16 train b8", "Swin-T fwd b1")

PEERS = ("torch", "ort", "ov-latency", "ov-throughput")
ONE_THREAD = "npvit-1t"  # --one-thread: npvit on one thread, for the perfect-scaling bound
TRAINING_PEERS = {"torch"}
NEEDS = {  # modules a peer needs in this interpreter (the engines read timm's ONNX export)
    "torch": ("torch", "timm"),
    "ort": ("onnxruntime", "onnx", "torch", "timm"),
    "ov-latency": ("openvino", "onnx", "torch", "timm"),
    "ov-throughput": ("openvino", "onnx", "torch", "timm"),
}

# Agreement with the reference (timm).  Float32 sums taken in different orders put every contestant's
# B/16 logits within 3e-6 of timm's here (random weights, |logit| ~ 1); a wrong weight, op or
# export is off by O(0.1), so 1e-4 separates the two with room for other BLAS kernels.
LOGITS_TOL = 1e-4   # times max(1, max |reference logit|)
# Gradients, per tensor, relative to that tensor's largest |entry|: npvit's S/16 gradients are within
# 2.4e-6 of timm's here; a wrong backward is off by O(1).
GRADS_TOL = 1e-3


# --- workers -------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Worker:
    """A bench_worker.py process: ``call(cmd, **kw)`` sends a command and returns its answer."""

    def __init__(self, spec=None):
        self.log = tempfile.TemporaryFile()  # the worker's stderr (library chatter), shown on failure
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log)
        try:
            self.facts = self.call("setup", spec=spec) if spec is not None else None
        except BaseException:
            self.close()
            raise

    def call(self, cmd, **kw):
        try:
            pickle.dump((cmd, kw), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            self.proc.wait()
            raise WorkerError(f"worker died (exit code {self.proc.returncode}):\n{self._log_tail()}") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def _log_tail(self, chars=3000):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except WorkerError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # this worker only, by its handle
                self.proc.wait()
        self.log.close()


def short_error(err, lines=4):
    return "\n".join("      " + line for line in str(err).strip().splitlines()[-lines:])


# --- what every contestant shares: timm's weights, its ONNX export, the FLOP count ------------------
class Prepared:
    """timm's model after torch.manual_seed(0), as an .npz of its state dict and (when an engine needs
    it) an ONNX file with a dynamic batch axis, plus its GEMM FLOPs per image; one per model."""

    def __init__(self, tmp):
        self.tmp, self.models = tmp, {}

    def get(self, name, onnx):
        if name in self.models and (self.models[name]["onnx"] or not onnx):
            return self.models[name]
        import timm
        import torch

        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        entry = self.models.get(name)
        if entry is None:
            entry = {"weights": os.path.join(self.tmp, name + ".npz"), "onnx": None,
                     "classes": model.num_classes, "flops": {k: count_flops(model, k) for k in ("forward", "train")}}
            np.savez(entry["weights"], **{n: t.detach().cpu().numpy() for n, t in model.state_dict().items()})
        if onnx:
            entry["onnx"] = os.path.join(self.tmp, name + ".onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), entry["onnx"], dynamo=False, opset_version=18,
                                  input_names=["x"], output_names=["logits"],
                                  dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        self.models[name] = entry
        return entry


def count_flops(model, kind):
    """GEMM FLOPs (2*M*N*K) of one image through timm's model: linear layers, convolutions and the
    attention products (fused attention is switched off while counting: FlopCounterMode does not
    see CPU SDPA).  ``train`` adds the backward (x needs no gradient, as in the timed step)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False
    x = torch.zeros(1, 3, 224, 224)
    try:
        with FlopCounterMode(display=False) as counter:
            if kind == "forward":
                with torch.no_grad():
                    model.eval()(x)
            else:
                torch.nn.functional.cross_entropy(model.train()(x), torch.zeros(1, dtype=torch.long)).backward()
    finally:
        for m in fused:
            m.fused_attn = True
        model.zero_grad(set_to_none=True)
        model.eval()
    return counter.get_total_flops()


# --- one case --------------------------------------------------------------------------------------
def deviation(out, ref):
    """Largest |out - ref| over the logits; for training also |loss difference| and the worst
    gradient deviation relative to that tensor's largest |reference entry|."""
    dev = {"logits": float(np.max(np.abs(out["logits"] - ref["logits"])))}
    if "grads" in ref and "grads" in out:
        common = ref["grads"].keys() & out["grads"].keys()
        dev["loss"] = abs(out["loss"] - ref["loss"])
        dev["grads"] = max((float(np.max(np.abs(out["grads"][n] - ref["grads"][n])))
                            / max(float(np.max(np.abs(ref["grads"][n]))), 1e-30) for n in common), default=float("nan"))
        dev["grad names missing"] = sorted(ref["grads"].keys() ^ out["grads"].keys())
    return dev


def agrees(dev, ref):
    ok = dev["logits"] <= LOGITS_TOL * max(1.0, float(np.max(np.abs(ref["logits"]))))
    if "grads" in dev:
        ok = ok and dev["grads"] <= GRADS_TOL and not dev["grad names missing"]
    return ok


def describe(dev):
    text = f"logits {dev['logits']:.1e}"
    if "grads" in dev:
        text += f", loss {dev['loss']:.1e}, grads {dev['grads']:.1e} rel"
        if dev["grad names missing"]:
            text += f", names not in both: {', '.join(dev['grad names missing'][:4])}"
    return text


def identical(a, b):
    if not np.array_equal(a["logits"], b["logits"]):
        return False
    if "grads" in a:
        return a["loss"] == b["loss"] and a["grads"].keys() == b["grads"].keys() and all(
            np.array_equal(a["grads"][n], b["grads"][n]) for n in a["grads"])
    return True


def run_case(name, case, contestants, main, npvit_labels, prepared, args, log):
    """Set up every contestant, check outputs, time paired rounds, probe memory.  Returns the result
    dict (None if the case could not run); prints as it goes."""
    engines = [c for c, spec in contestants.items() if spec["contestant"] not in ("npvit", "torch")]
    prep = prepared.get(case.model, onnx=bool(engines)) if prepared else None
    base = {"model": case.model, "batch": case.batch, "kind": case.kind, "knobs": case.knobs, "threads": args.threads,
            "backend": args.backend, "classes": prep["classes"] if prep else 1000,
            "weights": prep["weights"] if prep else None, "onnx": prep["onnx"] if prep else None}
    flops = prep["flops"][case.kind] * case.batch if prep else None
    log(f"\n== {name}: {case.model}" + "".join(f", {k}={v}" for k, v in case.knobs.items())
        + f", batch {case.batch}, {case.kind}"
        + (f"; {flops / 1e9:.1f} GFLOP in GEMMs" if flops else ""))

    workers, facts, failed = {}, {}, {}
    try:
        for label, spec in contestants.items():
            try:
                workers[label] = Worker(dict(base, **spec))
                facts[label] = workers[label].facts
            except WorkerError as err:
                failed[label] = err
        if main not in workers:
            log(f"  {main} failed to build, case skipped:\n{short_error(failed[main], 12)}")
            return None

        # -- the same outputs?  timm is the reference (a throwaway torch worker if torch is not timed)
        outputs = {}
        for label in list(workers):
            try:
                outputs[label] = workers[label].call("check")
            except WorkerError as err:
                failed[label] = err
                workers.pop(label).close()
        if main not in outputs:
            log(f"  {main} failed to run, case skipped:\n{short_error(failed[main], 12)}")
            return None
        ref_label = next((c for c, s in contestants.items() if s["contestant"] == "torch" and c in outputs), None)
        if ref_label is not None:
            reference = outputs[ref_label]
        elif prep is not None:
            ref_worker = Worker(dict(base, contestant="torch"))
            try:
                reference = ref_worker.call("check")
            finally:
                ref_worker.close()
        else:
            reference = None
        checks = {}
        if reference is not None:
            for label, out in outputs.items():
                if label != ref_label:
                    dev = deviation(out, reference)
                    checks[label] = {"deviation": dev, "agrees": agrees(dev, reference), "text": describe(dev)}
            log("  vs timm: " + "; ".join(f"{label} {c['text']}" + ("" if c["agrees"] else " MISMATCH")
                                          for label, c in checks.items()))
        else:
            log("  (timm is not importable here: outputs are not checked against it)")
        same = None
        if len(npvit_labels) == 2 and all(label in outputs for label in npvit_labels):
            a, b = (outputs[label] for label in npvit_labels)
            dev = deviation(b, a)
            same = {"identical": identical(a, b), "agrees": agrees(dev, a), "text": describe(dev)}
            log("  B vs A: " + ("identical outputs" if same["identical"] else
                                ("close: " if same["agrees"] else "DIFFERENT: ") + same["text"]))
        for label, err in failed.items():
            log(f"  {label}: failed, left out:\n{short_error(err)}")

        # -- paired rounds
        for label in list(workers):  # a second untimed run (check was the first)
            try:
                workers[label].call("time", pause=0, gemm=False)
            except WorkerError as err:
                if label == main:
                    raise
                log(f"  {label}: failed, left out:\n{short_error(err)}")
                failed[label] = err
                workers.pop(label).close()
        labels = list(workers)
        times = {label: [] for label in labels}
        rates = {label: [] for label in labels}
        others = []  # per kept round: the most CPU other processes used during any of its calls (cores)
        attempts, limit = 0, args.rounds * (3 if args.max_load is not None else 1)
        while len(times[main]) < args.rounds and attempts < limit:
            k = attempts % len(labels)
            attempts += 1
            got = {}
            for label in labels[k:] + labels[:k]:
                try:
                    got[label] = workers[label].call("time", pause=args.pause, gemm=label in npvit_labels)
                except WorkerError as err:  # a contestant that dies mid-run leaves the table
                    if label == main:
                        raise
                    log(f"  {label}: failed in round {attempts}, left out:\n{short_error(err)}")
                    failed[label] = err
                    labels.remove(label)
                    del times[label], rates[label]
                    workers.pop(label).close()
            other = max(g["other"] for g in got.values())
            if args.max_load is not None and other > args.max_load:
                continue  # disturbed by other processes: run the round again
            others.append(other)
            for label, g in got.items():
                if label in times:
                    times[label].append(g["s"])
                    if g["rate"]:
                        rates[label].append(g["rate"])
        if not times[main]:
            log(f"  no round ran with other processes under {args.max_load} cores in {attempts} tries: case skipped")
            return None
    finally:
        for worker in workers.values():
            worker.close()

    result = {"case": name, **case.__dict__, "gemm_flops": flops, "contestants": {}, "failed": sorted(failed),
              "rounds_kept": len(others), "rounds_run": attempts, "other_load": others}
    if same is not None:
        result["b_vs_a"] = same
    for label in labels:
        t = np.array(times[label])
        row = {"ms": float(np.median(t)) * 1e3, "times_s": t.tolist(), "facts": facts[label]}
        if label != main:
            per_round = np.array(times[main]) / t
            row.update(ratio=float(np.median(per_round)), ratio_min=float(per_round.min()),
                       ratio_max=float(per_round.max()))
        if flops and rates[label]:
            floors = flops / np.array(rates[label])
            row.update(floor_ms=float(np.median(floors)) * 1e3, share=float(np.median(floors / t)),
                       gemm_gflops=float(np.median(rates[label])) / 1e9)
        if label in checks:
            row["check"] = checks[label]
        result["contestants"][label] = row

    # -- peak memory, a fresh process per contestant
    if not args.no_memory:
        for label in labels:
            spec = dict(base, **contestants[label], weights=None)
            if "nireq" in facts[label]:
                spec["nireq"] = facts[label]["nireq"]  # OpenVINO's answer from the timing process
            try:
                probe = Worker(spec)
                try:
                    probe.call("time", pause=0, gemm=False)
                    result["contestants"][label]["peak_mib"] = probe.call("peak")
                finally:
                    probe.close()
            except WorkerError as err:
                log(f"  {label}: memory probe failed:\n{short_error(err)}")
    print_case(result, main)
    log(f"  rounds kept {len(others)} of {attempts}; other processes' CPU use during the timed calls "
        f"(worst call per round): median {np.median(others):.2f} cores, max {max(others):.2f}"
        + ("  (a busy machine: treat the times as rough)" if np.median(others) > 0.15 else ""))
    return result


def print_case(result, main):
    rows = result["contestants"]
    print(f"  {'who':<22}{'median ms':>10}{main + '/who':>11}{'(range)':>13}{'floor ms':>10}{'% floor':>9}"
          f"{'peak MiB':>10}")
    for label, row in rows.items():
        ratio = f"{row['ratio']:>11.2f}{'(' + format(row['ratio_min'], '.2f') + '-' + format(row['ratio_max'], '.2f') + ')':>13}" \
            if "ratio" in row else " " * 24
        floor = f"{row['floor_ms']:>10.1f}{row['share']:>9.0%}" if "share" in row else " " * 19
        mem = f"{row['peak_mib']:>10.0f}" if "peak_mib" in row else ""
        name = label + (f" ({row['facts']['requests']} req)" if "requests" in row["facts"] else "")
        print(f"  {name:<22}{row['ms']:>10.1f}{ratio}{floor}{mem}")
    sys.stdout.flush()


def print_summary(results, main, npvit_labels, peers):
    """One line per case: the table for the README."""
    print(f"\nsummary (ratio = {main} time / other time, median of per-round ratios; < 1: {main} is faster)")
    if len(npvit_labels) == 2:
        a, b = npvit_labels
        print(f"{'case':<16}{'A ms':>10}{'B ms':>10}{'B/A':>7}{'A %floor':>10}{'B %floor':>10}  {'outputs':<11}"
              + "".join(f"{'B/' + p:>16}" for p in peers) + f"{'A MiB':>8}{'B MiB':>8}")
        for res in results:
            rows = res["contestants"]
            if a not in rows:
                print(f"{res['case']:<16}{'-':>10}{rows[b]['ms']:>10.1f}  (A failed)")
                continue
            same = res.get("b_vs_a", {})
            out = "identical" if same.get("identical") else "close" if same.get("agrees") else "DIFFERENT" if same else "?"
            line = (f"{res['case']:<16}{rows[a]['ms']:>10.1f}{rows[b]['ms']:>10.1f}{rows[a]['ratio']:>7.3f}"
                    f"{_pct(rows[a]):>10}{_pct(rows[b]):>10}  {out:<11}")
            line += "".join(f"{rows[p]['ratio']:>16.2f}" if p in rows else f"{'-':>16}" for p in peers)
            line += "".join(f"{rows[x]['peak_mib']:>8.0f}" if "peak_mib" in rows[x] else f"{'-':>8}" for x in (a, b))
            print(line)
        return
    print(f"{'case':<16}{'npvit ms':>10}{'% floor':>9}" + "".join(f"{p:>15}" for p in peers)
          + f"{'npvit MiB':>11}  lowest peer MiB")
    for res in results:
        rows = res["contestants"]
        line = f"{res['case']:<16}{rows[main]['ms']:>10.1f}{_pct(rows[main]):>9}"
        line += "".join(f"{rows[p]['ratio']:>15.2f}" if p in rows else f"{'-':>15}" for p in peers)
        if "peak_mib" in rows[main]:
            mems = {p: rows[p]["peak_mib"] for p in rows if p != main and "peak_mib" in rows[p]}
            line += f"{rows[main]['peak_mib']:>11.0f}"
            if mems:
                low = min(mems, key=mems.get)
                verdict = "npvit at or below" if rows[main]["peak_mib"] <= mems[low] else "npvit above"
                line += f"  {mems[low]:.0f} ({low}): {verdict}"
        print(line)


def print_scaling_bound(results, peers, threads):
    """With --one-thread: npvit's own scaling, and its one-thread time / ``threads`` against each peer
    (median of per-round ratios): the ratio npvit would reach if its threads scaled perfectly."""
    print(f"\nperfect scaling (npvit-1t time / {threads}, over the peer's time in the same round; "
          f"'scaling': npvit on {threads} threads / on one)")
    print(f"{'case':<16}{'1t ms':>10}{'scaling':>9}" + "".join(f"{p:>15}" for p in peers))
    for res in results:
        rows = res["contestants"]
        if ONE_THREAD not in rows:
            continue
        one = np.array(rows[ONE_THREAD]["times_s"]) / threads
        line = f"{res['case']:<16}{rows[ONE_THREAD]['ms']:>10.1f}{rows[ONE_THREAD]['ratio']:>9.2f}"
        line += "".join(f"{np.median(one / np.array(rows[p]['times_s'])):>15.2f}" if p in rows else f"{'-':>15}"
                        for p in peers)
        print(line)


def _pct(row):
    return f"{row['share']:.0%}" if "share" in row else "-"


# --- the header ---------------------------------------------------------------------------------------
def cpu_description():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, _, value = line.partition(":")
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown CPU"
    flags = fields.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}; "
            f"{isa}), {os.cpu_count()} CPUs")


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_time(root):
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import npvit"], capture_output=True, text=True,
                         cwd=root, env=env, check=True)
    last = [line for line in out.stderr.splitlines() if line.rstrip().endswith("| npvit")]
    return int(last[-1].split("|")[1]) / 1e6 if last else float("nan")


def git(*argv):
    return subprocess.run(["git", "--no-optional-locks", "-C", ROOT, *argv], capture_output=True, text=True,
                          check=True).stdout.strip()


def extract_revision(rev, dest):
    """npvit/ at git revision ``rev`` extracted into ``dest`` (git archive: the repository is only
    read); or ``rev`` itself if it is a folder holding an npvit package.  Returns (root, label)."""
    if os.path.isdir(os.path.join(rev, "npvit")):
        return os.path.abspath(rev), os.path.abspath(rev)
    try:
        sha = git("rev-parse", "--short", rev + "^{commit}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rev!r} is neither a git revision nor a folder holding npvit/") from None
    os.makedirs(dest)
    proc = subprocess.Popen(["git", "-C", ROOT, "archive", "--format=tar", sha, "npvit"], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if proc.wait() != 0:
        raise SystemExit(f"git archive {sha} failed")
    return dest, "revision " + (rev if rev.startswith(sha) else f"{rev} = {sha}")


def working_tree_label():
    try:
        dirty = git("status", "--porcelain", "--", "npvit")
        return f"working tree (HEAD {git('rev-parse', '--short', 'HEAD')}" + (", npvit/ modified)" if dirty else ")")
    except (subprocess.CalledProcessError, OSError):
        return "working tree"


# --- main ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None,
                        help="comma- or space-separated case names (default: all; --quick: "
                             f"{', '.join(QUICK)}); known: {', '.join(CASES)}")
    parser.add_argument("--peers", default=None,
                        help="comma-separated subset of " + ",".join(PEERS) + " ('ov' = both OpenVINO modes, "
                             "'none'); default: every one that imports, none with --ab")
    parser.add_argument("--ab", metavar="REV", default=None,
                        help="A/B: npvit at git revision REV (or a folder holding npvit/) as A against the "
                             "working tree as B, in the same rounds")
    parser.add_argument("--npvit", metavar="REV", default=None,
                        help="measure npvit at git revision REV (or a folder holding npvit/) instead of the "
                             "working tree (B in A/B mode)")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds per case (default 5, --quick 3)")
    parser.add_argument("--max-load", type=float, default=None, metavar="CORES",
                        help="rerun a round (up to 3x --rounds in all) when other processes used more than "
                             "CORES cores during any of its timed calls; the load is always reported")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds of idle before each timed call")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("NPVIT_BENCH_THREADS", "2")),
                        help="threads for every contestant (default 2, or NPVIT_BENCH_THREADS)")
    parser.add_argument("--one-thread", action="store_true",
                        help="also time npvit on one thread (npvit-1t) and print what perfect scaling over "
                             "--threads would give against each peer")
    parser.add_argument("--quick", action="store_true", help=f"cases {', '.join(QUICK)}, 3 rounds, no load times")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--no-load", action="store_true", help="skip the checkpoint load times")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH")
    args = parser.parse_args(argv)

    names = [n.strip() for item in (args.cases or (QUICK if args.quick else CASES)) for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    args.cases = names
    if args.one_thread and (args.ab or args.threads < 2):
        parser.error("--one-thread compares npvit on one thread with npvit on --threads (>= 2); not with --ab")
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.peers is None:
        args.peers = [] if args.ab else list(PEERS)
    else:
        asked = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]
        if "all" in asked:
            asked = list(PEERS)
        asked = [q for p in asked for q in (("ov-latency", "ov-throughput") if p == "ov" else (p,))]
        bad = [p for p in asked if p not in PEERS]
        if bad:
            parser.error(f"unknown peer(s) {bad}; known: {', '.join(PEERS)}")
        args.peers = [p for p in PEERS if p in asked]
    return args


def main(argv=None):
    args = parse_args(argv)
    # Every contestant gets the same thread count (workers inherit this environment).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NPVIT_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    missing = {}
    for peer in args.peers:
        gone = [m for m in NEEDS[peer] if importlib.util.find_spec(m) is None]
        if gone:
            missing[peer] = "no module " + ", ".join(gone)
        elif args.backend == "cupy" and peer != "torch":
            missing[peer] = "a CPU engine (--backend cupy)"
    peers = [p for p in args.peers if p not in missing]
    have_timm = all(importlib.util.find_spec(m) is not None for m in ("torch", "timm"))

    with tempfile.TemporaryDirectory(prefix="npvit-bench-") as tmp:
        main_label = "B" if args.ab else "npvit"
        under_test = extract_revision(args.npvit, os.path.join(tmp, "main")) if args.npvit else (ROOT, working_tree_label())
        roots = {"A": extract_revision(args.ab, os.path.join(tmp, "A"))} if args.ab else {}
        roots[main_label] = under_test
        npvit_labels = list(roots)

        infos = {}
        for label, (root, _) in roots.items():
            w = Worker()
            try:
                infos[label] = w.call("info", npvit_root=root, backend=args.backend)
            finally:
                w.close()
            infos[label]["import_s"] = import_time(root)

        forced = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
        now = datetime.datetime.now(datetime.timezone.utc)
        header = {"date": now.isoformat(timespec="seconds"), "cpu": cpu_description(), "threads": args.threads,
                  "kernel": infos[main_label]["kernel"], "forced": forced,
                  "versions": {d: version(d) for d in ("numpy", "torch", "timm", "onnxruntime", "openvino", "onnx")}}
        print(f"npvit bench, {now:%Y-%m-%d %H:%M} UTC; {header['cpu']}; {args.threads} threads per contestant; "
              f"float32, backend {args.backend}")
        for label, (root, desc) in roots.items():
            info = infos[label]
            print(f"{label if args.ab else 'npvit'}: npvit {info['version']} from {desc}; numpy {info['numpy']}"
                  + (f", OpenBLAS kernels: {info['kernel']}" if info["kernel"] else "")
                  + (f" (forced by {forced})" if forced and info["kernel"] else "")
                  + f"; GEMM rate now {info['rate'] / 1e9:.0f} GFLOP/s; import npvit {info['import_s'] * 1e3:.0f} ms")
        print("libraries: " + ", ".join(f"{d} {v}" for d, v in header["versions"].items() if v))
        print("peers: " + (", ".join(peers) or "none") + "".join(f"; {p} missing ({why})" for p, why in missing.items()))
        if not have_timm:
            print("timm is not importable: npvit builds from its own seeded init and outputs are not checked against timm")

        contestants = {label: {"contestant": "npvit", "npvit_root": root} for label, (root, _) in roots.items()}
        if args.one_thread:
            contestants[ONE_THREAD] = {"contestant": "npvit", "npvit_root": under_test[0], "threads": 1}
        prepared = Prepared(tmp) if have_timm else None
        results = []
        for name in args.cases:
            case = CASES[name]
            unknown = [label for label in roots if case.model not in infos[label]["models"]]
            if unknown:
                print(f"\n== {name}: skipped, npvit ({', '.join(unknown)}) has no model {case.model}")
                continue
            case_peers = [p for p in peers if case.kind == "forward" or p in TRAINING_PEERS]
            entrants = dict(contestants, **{p: {"contestant": p} for p in case_peers})
            try:
                result = run_case(name, case, entrants, main_label, npvit_labels, prepared, args,
                                  log=lambda text: print(text, flush=True))
            except WorkerError as err:
                print(f"  {main_label} failed, case skipped:\n{short_error(err, 12)}", flush=True)
                result = None
            if result:
                results.append(result)

        if results:
            print_summary(results, main_label, npvit_labels, peers)
            if args.one_thread:
                print_scaling_bound(results, peers, args.threads)
        loads = {}
        if not (args.quick or args.no_load):
            for label, (root, _) in roots.items():
                w = Worker()
                try:
                    loads[label] = w.call("load_times", npvit_root=root)
                    print(f"load ViT-B/16{' (' + label + ')' if args.ab else ''}: "
                          + ", ".join(f"{kind} {sec * 1e3:.0f} ms" for kind, sec in loads[label].items()))
                except WorkerError as err:
                    print(f"load times ({label}) failed:\n{short_error(err)}")
                finally:
                    w.close()

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "npvit": {label: {"source": roots[label][1], **infos[label]} for label in roots},
                       "peers": peers, "missing": missing, "rounds": args.rounds, "pause": args.pause,
                       "results": results, "load_s": loads}, f, indent=1, default=_jsonable)
        print(f"wrote {args.json}")


def _jsonable(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    return str(x)


if __name__ == "__main__":
    main()
