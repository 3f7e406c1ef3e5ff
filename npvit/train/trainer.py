"""``train(model, train_data, eval_data, ...)``: the training loop, its metrics and checkpoints.

One optimizer step (``accum_steps`` micro-batches of ``batch_size`` images each):

    for each micro-batch m of the step's images (n_m of n in all):
        x = augment(images)                     (B, 3, H, W), random resized crop + flip
        logits = model.forward(x, train=True, grad=True, rng=dropout generator)
        loss, dlogits = cross_entropy(logits, labels, label_smoothing)     mean over m
        grads += backward(dlogits * n_m / n)    so the sum is the gradient of the mean over all n
    [unscale (loss scaling)] -> [clip to max global norm] -> schedule sets lr -> optimizer step

Every epoch: evaluate (loss, top-1, top-5), append a row to ``metrics.jsonl`` / ``metrics.csv``,
write ``checkpoint.npz`` (resume state) and ``model.npz`` (``npvit.save``: load it, predict with
it, fine-tune from it), each atomically.

Reproducibility: all randomness is drawn from generators seeded by (seed, purpose, position) --
the epoch's sample order from (seed, 0, epoch), augmentation from (seed, 1, step, micro-batch),
dropout / drop path from (seed, 2, step, micro-batch) -- so a run resumed from a checkpoint
draws exactly what the uninterrupted run would have, and the results are bit for bit the same.

Data-parallel training (``comm``: K processes under MPI, see ``npvit.distributed``):

    every rank runs this loop with the same data, settings and weights (compared at the start)
    and draws the same order and augmentation; micro-batch m of b images is cut into K contiguous
    parts (parallel.share), rank r forwards and backwards its part alone:
        grads_r = sum over its micro-batches of backward(dlogits_part * n_part / n)
    one Allreduce per step sums [grads_r | loss sum | hits | failure flag] (parallel.GradientBuffer):
        sum_r grads_r = one process's gradient (each image adds (softmax - target) / n either way;
        only the order of the additions differs)
    then every rank takes the same clip / schedule / optimizer step, so the weights stay equal
    (their digests are compared after every epoch).

``batch_size`` is the global micro-batch and must divide by K; a dataset's shorter last batch is
cut as evenly as it goes (some ranks take one image more, or none), which changes nothing in the
sum.  Evaluation splits the evaluation set the same way.  Rank 0 alone writes checkpoints and
metrics, and reads the checkpoint to resume (sent to the others), so K may change between a run
and its resumption.  Dropout and drop path draw their masks per rank, from (seed, 2, step,
micro-batch, rank): a model with them trains reproducibly for a given K but not exactly as one
process would.  Any rank's exception is raised on every rank as a ``DistributedError``.
"""
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .. import optim
from ..formats.atomic import atomic_write
from ..ops.loss import cross_entropy
from ..predict import resolve_preprocess
from .checkpoint import read_checkpoint, save_checkpoint
from .data import TrainTransform, epoch_order, eval_batch
from .parallel import GradientBuffer, run_settings, share, tree_sum, weights_digest

CHECKPOINT, MODEL, METRICS = "checkpoint.npz", "model.npz", "metrics"
METRIC_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1",
                  "eval_top5", "epoch_s", "img_per_s", "elapsed_s")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that step."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64                 # images per micro-batch (one forward/backward)
    accum_steps: int = 1                 # micro-batches per optimizer step
    optimizer: str = "adamw"             # "adamw" | "sgd"
    lr: float = 1e-3                     # peak learning rate (after warmup)
    weight_decay: float = 0.05
    momentum: float = 0.9                # sgd
    nesterov: bool = False               # sgd
    betas: Tuple[float, float] = (0.9, 0.999)   # adamw
    eps: float = 1e-8                    # adamw
    no_decay: Optional[Tuple[str, ...]] = None  # None: biases, norms, tokens, pos_embed, 1-D
    layer_decay: Optional[float] = None
    trainable: Optional[Tuple[str, ...]] = None  # None: everything; else names/prefixes to train
    schedule: str = "cosine"             # "cosine" | "linear" | "constant", per step
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    clip_grad: Optional[float] = None    # max global gradient norm
    label_smoothing: float = 0.0
    augment: bool = True
    scale: Tuple[float, float] = (0.08, 1.0)     # random resized crop: area fraction
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)  # random resized crop: aspect ratio
    hflip: float = 0.5
    invert: float = 0.0                  # probability of x -> 1 - x (digit polarity)
    loss_scaling: bool = False           # dynamic loss scaling with master weights
    master_dtype: str = "float32"
    seed: int = 0
    eval_batch_size: int = 256
    # Split every batch into this many shards (a power of two) whose gradients are added in a fixed
    # pairwise tree: a run on K ranks (K dividing it) then gives bit for bit the weights of one
    # process, since each rank computes whole shards and the ranks complete the tree's top.  1: the
    # batch in one pass, and K ranks equal one process only up to rounding (which training grows).
    exact_shards: int = 1

    def __post_init__(self):
        for name in ("betas", "scale", "ratio", "no_decay", "trainable"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                setattr(self, name, tuple(v))
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0, got {self.clip_grad}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.exact_shards >= 1 and self.exact_shards & (self.exact_shards - 1) == 0,
             f"exact_shards must be a power of two (1, 2, 4, ...), got {self.exact_shards}"),
            (self.exact_shards == 1 or self.accum_steps == 1,
             "exact_shards needs accum_steps=1 (the accumulated micro-batches would be added in another "
             "order on one process than over the ranks)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid training setting: {msg}")

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def train(model, train_data, eval_data=None, config=None, *, out=None, resume=False, progress=True,
          stop_after=None, stream=None, blas_threads=None, comm=None, **overrides):
    """Train ``model`` in place; returns the list of per-epoch metrics.

    ``config``: a TrainConfig (``overrides`` are its fields).  ``out``: a folder for checkpoints
    and metrics (none written without it).  ``resume``: continue from ``out/checkpoint.npz``.
    ``stop_after``: return after this many epochs of this call, as if interrupted (resume later).
    ``blas_threads``: cap OpenBLAS's threads while training.  The model's own products already run
    on npvit's threads (``NPVIT_NUM_THREADS``) with OpenBLAS at one thread; the cap is for the rest
    of the loop's NumPy work (augmentation), whose threaded products leave OpenBLAS workers
    spinning into the next step.
    ``comm``: train data-parallel with the other ranks of this MPI communicator (an mpi4py
    communicator or ``npvit.distributed.mpi_world()``); every rank calls ``train`` alike and gets
    the same history back.  See "Data-parallel training" at the top of this module.
    """
    from ..distributed import as_communicator

    comm = as_communicator(comm)
    limit = contextlib.nullcontext() if blas_threads is None else model.backend.blas_limit(int(blas_threads))
    with limit:  # the model's backend owns the BLAS cap (its ops hold OpenBLAS at one thread anyway)
        return _train(model, train_data, eval_data, config, out, resume, progress, stop_after, stream, overrides, comm)


def _train(model, train_data, eval_data, config, out, resume, progress, stop_after, stream, overrides, comm):
    with comm.together("setting up the run"):
        cfg = (config or TrainConfig())
        cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
        if cfg.batch_size % comm.size:
            raise ValueError(f"the batch of {cfg.batch_size} images does not divide among {comm.size} ranks: "
                             f"choose a batch size that is a multiple of {comm.size} (each rank takes "
                             f"batch_size / {comm.size} images of every batch)")
        if cfg.exact_shards > 1 and cfg.exact_shards % comm.size:
            raise ValueError(f"exact_shards={cfg.exact_shards} does not divide among {comm.size} ranks: "
                             f"choose a multiple of {comm.size} (each rank computes whole shards)")
        stream = stream if stream is not None else sys.stderr
        pre = resolve_preprocess(model)
        if model.preprocess is None:
            model.preprocess = pre
        _check_data(model, train_data, eval_data)
        if model.config.label_names is None and len(train_data.label_names) == model.config.num_classes:
            model.config = model.config.replace(label_names=train_data.label_names)

        steps_per_epoch = math.ceil(len(train_data) / (cfg.batch_size * cfg.accum_steps))
        total = cfg.epochs * steps_per_epoch
        opt = _make_optimizer(model, cfg)
        sched = optim.Schedule(opt, total_steps=total, warmup_steps=min(total, round(cfg.warmup_epochs * steps_per_epoch)),
                               decay=cfg.schedule, min_lr=cfg.min_lr)
        scaler = optim.DynamicLossScaler(opt, master_dtype=cfg.master_dtype) if cfg.loss_scaling else None
        transform = TrainTransform(pre, cfg.scale, cfg.ratio, cfg.hflip, cfg.invert) if cfg.augment else None
        settings = run_settings(model, cfg, train_data, eval_data, resume, stop_after) if comm.size > 1 else None
    comm.agree(settings)

    history, start_epoch, step = [], 0, 0
    ckpt_path = os.path.join(out, CHECKPOINT) if out else None
    state = None
    with comm.together("opening the run folder"):
        if out and comm.rank == 0:  # the other ranks never touch the folder: it need not be shared
            os.makedirs(out, exist_ok=True)
            if resume and os.path.exists(ckpt_path):
                state = read_checkpoint(ckpt_path)
            elif resume:
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path} (run without --resume to start)")
            elif os.path.exists(ckpt_path):
                raise ValueError(f"{out} already holds a training run ({CHECKPOINT}): pass --resume to "
                                 "continue it, or choose another --out folder")
        elif resume and not out:
            raise ValueError("resume needs the run's folder: pass out=DIR")
    if resume:
        state = comm.bcast(state)
        with comm.together("resuming from the checkpoint"):
            history, start_epoch, step = _resume(ckpt_path, state, model, opt, sched, scaler, cfg)
    if comm.size > 1:
        comm.agree({"starting weights": weights_digest(model)})

    bar = _Progress(stream, progress and comm.rank == 0)
    flat = GradientBuffer(model, opt.trainable) if comm.size > 1 else None
    elapsed = history[-1]["elapsed_s"] if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        t0 = time.perf_counter()
        order = epoch_order(len(train_data), cfg.seed, epoch)
        seen, loss_sum, correct = 0, 0.0, 0
        for s in range(steps_per_epoch):
            chunk = order[s * cfg.batch_size * cfg.accum_steps:(s + 1) * cfg.batch_size * cfg.accum_steps]
            lr, loss, right = _train_step(model, opt, sched, scaler, transform, train_data, chunk, cfg,
                                          step, epoch, s, steps_per_epoch, pre, comm, flat)
            step += 1
            seen, loss_sum, correct = seen + len(chunk), loss_sum + loss * len(chunk), correct + right
            bar.update(epoch, cfg.epochs, s + 1, steps_per_epoch, loss_sum / seen, seen / (time.perf_counter() - t0), lr)
        train_time = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": step, "lr": opt.lr, "train_loss": loss_sum / seen,
               "train_top1": correct / seen}
        if eval_data is not None:
            ev = _evaluate_shared(model, eval_data, pre, cfg.eval_batch_size, comm)
            row.update(eval_loss=ev["loss"], eval_top1=ev["top1"], eval_top5=ev["top5"])
        epoch_time = time.perf_counter() - t0
        elapsed += epoch_time
        row.update(epoch_s=epoch_time, img_per_s=seen / train_time, elapsed_s=elapsed)
        if comm.size > 1:  # every rank reports rank 0's times, so that all return the same history
            row.update(comm.bcast({k: row[k] for k in ("epoch_s", "img_per_s", "elapsed_s")}))
            elapsed = row["elapsed_s"]
        history.append(row)
        bar.epoch_done(row, cfg.epochs)
        if comm.size > 1:
            comm.agree({f"weights after epoch {epoch + 1}": weights_digest(model)})
        with comm.together("writing the checkpoint and metrics"):
            if out and comm.rank == 0:
                meta = {"train": cfg.to_dict(), "epoch": epoch + 1, "step": step, "history": history,
                        "schedule": sched.state_dict(), "ranks": comm.size,
                        "rng": {"seed": cfg.seed, "scheme": "seed/purpose/position v1"}}
                save_checkpoint(ckpt_path, model, opt, meta, scaler)
                from ..formats import save
                save(model, os.path.join(out, MODEL))
                write_metrics(out, history)
    return history


def _train_step(model, opt, sched, scaler, transform, data, chunk, cfg, step, epoch, s, steps_per_epoch, pre,
                comm, flat):
    """One optimizer step over the images ``chunk`` (this rank's parts of them, summed over the
    ranks through ``flat``); returns (lr, mean loss, top-1 hits)."""
    n = len(chunk)
    try:
        grads, loss_total, right = _local_gradients(model, opt, scaler, transform, data, chunk, cfg, step,
                                                    epoch, s, steps_per_epoch, pre, comm)
        error = None
    except Exception as exc:
        if flat is None:
            raise
        grads, loss_total, right, error = None, 0.0, 0, exc
    if flat is not None:  # the one Allreduce of the step (an exact-shard run gathers instead, for > 2 ranks)
        grads, loss_total, right = flat.reduce(comm, grads, loss_total, right, error, f"training step {step + 1}",
                                               tree=cfg.exact_shards > 1)
    if scaler is not None:
        grads = scaler.unscale(grads)
    if cfg.clip_grad:
        optim.clip_grad_norm(grads, cfg.clip_grad)
    lr = sched.step()
    if scaler is not None:
        scaler.step(grads)
    else:
        opt.step(grads)
    return lr, loss_total / n, right


def _local_gradients(model, opt, scaler, transform, data, chunk, cfg, step, epoch, s, steps_per_epoch, pre, comm):
    """This rank's share of one step: (gradient sum or None, loss sum, top-1 hits) of its images."""
    if cfg.exact_shards > 1:
        return _shard_gradients(model, opt, scaler, transform, data, chunk, cfg, step, epoch, s,
                                steps_per_epoch, pre, comm)
    n = len(chunk)
    grads, loss_total, right = None, 0.0, 0
    for m, start in enumerate(range(0, n, cfg.batch_size)):
        batch = chunk[start:start + cfg.batch_size]
        lo, hi = share(len(batch), comm.rank, comm.size)
        if lo == hi:  # a last batch with fewer images than ranks: none for this one
            continue
        key = (cfg.seed, 2, step, m) if comm.size == 1 else (cfg.seed, 2, step, m, comm.rank)
        g, loss, hits = _part_gradients(model, opt, scaler, transform, data, batch, lo, hi, n, cfg, step, m,
                                        key, comm.size > 1, epoch, s, steps_per_epoch, pre)
        loss_total += loss
        right += hits
        if grads is None:
            grads = g
        else:
            for k in opt.trainable:
                grads[k] += g[k]
    return grads, loss_total, right


def _shard_gradients(model, opt, scaler, transform, data, chunk, cfg, step, epoch, s, steps_per_epoch, pre, comm):
    """The same with ``exact_shards``: the (one) batch in S shards, this rank's S/K of them, their
    gradients added in the pairwise tree that the ranks complete (``parallel.tree_sum``); dropout masks are
    drawn per shard, so they do not depend on the number of ranks either."""
    S, K = cfg.exact_shards, comm.size
    parts, loss_total, right = [], 0.0, 0
    for j in range(comm.rank * S // K, (comm.rank + 1) * S // K):
        lo, hi = share(len(chunk), j, S)
        if lo == hi:
            continue
        g, loss, hits = _part_gradients(model, opt, scaler, transform, data, chunk, lo, hi, len(chunk), cfg,
                                        step, 0, (cfg.seed, 2, step, 0, j), True, epoch, s, steps_per_epoch, pre)
        parts.append(g)
        loss_total += loss
        right += hits
    grads = tree_sum(parts, lambda a, b: {k: a[k] + b[k] for k in a}) if parts else None
    return grads, loss_total, right


def _part_gradients(model, opt, scaler, transform, data, batch, lo, hi, n, cfg, step, m, key, split,
                    epoch, s, steps_per_epoch, pre):
    """(gradients, loss sum, top-1 hits) of images ``batch[lo:hi]`` of a step of ``n`` images; the
    augmentation draws are the whole batch's (``part``), the dropout masks drawn from ``key``."""
    backend = model.backend
    idx = batch[lo:hi]
    if transform is not None:
        x = transform(data, batch, np.random.default_rng([cfg.seed, 1, step, m]),
                      part=slice(lo, hi) if split else None)
    else:
        x = eval_batch(data, idx, pre)
    y = data.labels[idx]
    out = model.forward(backend.from_numpy(x, dtype=model.dtype), train=True, grad=True,
                        rng=backend.rng(_derive(*key)))
    loss, dout, logits = _loss(out, backend.from_numpy(y), cfg.label_smoothing)
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"the training loss is {loss} at step {step + 1} (epoch {epoch + 1}, batch {s + 1} of "
            f"{steps_per_epoch}); stopped before applying it. Lower the learning rate (now "
            f"{opt.lr:.3g}), clip gradients (clip_grad / --clip-grad 1.0) or warm up longer; the "
            "last checkpoint, if any, holds the previous epoch")
    hits = int((backend.to_numpy(logits).argmax(axis=1) == y).sum())
    weight = len(idx) / n                                # each image's share of the step's mean
    dout = tuple(d * weight for d in dout) if isinstance(dout, tuple) else dout * weight
    if scaler is not None:
        dout = scaler.scale(dout)
    _, g = model.backward(dout, input_grad=False)
    return {k: g[k] for k in opt.trainable}, loss * len(idx), hits


def _loss(out, y, smoothing):
    """(loss, dout, logits for accuracy); a distilled model in training gives two heads, averaged."""
    if isinstance(out, tuple):
        (l1, d1), (l2, d2) = (cross_entropy(o, y, smoothing) for o in out)
        return (l1 + l2) / 2, (d1 / 2, d2 / 2), (out[0] + out[1]) / 2
    loss, d = cross_entropy(out, y, smoothing)
    return loss, d, out


def evaluate(model, dataset, preprocess=None, batch_size=256):
    """Eval-mode loss (mean cross-entropy), top-1 and top-5 accuracy over ``dataset``."""
    pre = resolve_preprocess(model, preprocess)
    n = len(dataset)
    loss_sum, top1, top5 = _eval_sums(model, dataset, pre, batch_size, 0, n)
    return {"loss": loss_sum / n, "top1": top1 / n, "top5": top5 / n, "n": n}


def _evaluate_shared(model, dataset, pre, batch_size, comm):
    """``evaluate`` with the images shared among the ranks: each takes a contiguous part."""
    if comm.size == 1:
        return evaluate(model, dataset, pre, batch_size)
    n = len(dataset)
    sums, error = np.zeros(4), None                                     # loss sum, top-1, top-5, flag
    try:
        sums[:3] = _eval_sums(model, dataset, pre, batch_size, *share(n, comm.rank, comm.size))
    except Exception as exc:
        error = exc
    comm.allreduce(sums, error, "evaluating")
    return {"loss": sums[0] / n, "top1": sums[1] / n, "top5": sums[2] / n, "n": n}


def _eval_sums(model, dataset, pre, batch_size, lo, hi):
    """(loss sum, top-1 hits, top-5 hits) over the images lo..hi-1 of ``dataset``."""
    backend = model.backend
    k = min(5, model.config.num_classes)
    loss_sum, top1, top5 = 0.0, 0, 0
    for start in range(lo, hi, batch_size):
        idx = np.arange(start, min(hi, start + batch_size))
        x = backend.from_numpy(eval_batch(dataset, idx, pre), dtype=model.dtype)
        logits = model.forward(x)
        y = dataset.labels[idx]
        loss, _ = cross_entropy(logits, backend.from_numpy(y))
        loss_sum += loss * len(idx)
        ranked = np.argsort(-backend.to_numpy(logits), axis=1, kind="stable")[:, :k]   # (b, k)
        top1 += int((ranked[:, 0] == y).sum())
        top5 += int((ranked == y[:, None]).any(axis=1).sum())
    return loss_sum, top1, top5


def write_metrics(out, history):
    """``metrics.jsonl`` and ``metrics.csv``, rewritten whole (atomically) from the history."""
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(os.path.join(out, METRICS + ".jsonl"), lambda f: f.write(lines.encode()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(os.path.join(out, METRICS + ".csv"), lambda f: f.write(buf.getvalue().encode()))


def _make_optimizer(model, cfg):
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, no_decay=cfg.no_decay,
                  layer_decay=cfg.layer_decay, trainable=cfg.trainable)
    if cfg.optimizer == "sgd":
        return optim.SGD(model, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    return optim.AdamW(model, betas=cfg.betas, eps=cfg.eps, **common)


def _resume(path, state, model, opt, sched, scaler, cfg):
    """Load ``state`` (``read_checkpoint(path)``'s result) into the run; (history, epoch, step)."""
    meta, params, opt_state, scaler_state = state
    saved = TrainConfig.from_dict(meta["train"])
    changed = {k: (getattr(saved, k), getattr(cfg, k)) for k in TrainConfig.__dataclass_fields__
               if k != "epochs" and getattr(saved, k) != getattr(cfg, k)}
    if changed:
        raise ValueError(f"{path} was written with different settings; resume with the same ones "
                         f"(only the number of epochs may change): " +
                         ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    if meta["model"]["config"] != model.config.to_dict():
        raise ValueError(f"{path} holds a different model ({meta['model']['config']}); build the same "
                         "model (same --model and settings) to resume")
    model.load_state_dict(params)
    opt.load_state_dict(opt_state)
    if scaler is not None:
        scaler.load_state_dict(scaler_state)
    if saved.epochs == cfg.epochs:
        sched.load_state_dict(meta["schedule"])
    else:  # a longer (or shorter) run: same warmup, the decay re-spread over the new length
        sched.last_step = int(meta["schedule"]["last_step"])
    return list(meta["history"]), int(meta["epoch"]), int(meta["step"])


def _check_data(model, train_data, eval_data):
    K = model.config.num_classes
    if not K:
        raise ValueError("the model has no classification head (num_classes=0): build it with "
                         "num_classes=N, or use npvit.train.finetune.new_head(model, N)")
    for name, ds in (("training", train_data), ("evaluation", eval_data)):
        if ds is None:
            continue
        if len(ds) == 0:
            raise ValueError(f"the {name} set is empty")
        if int(ds.labels.max()) >= K:
            raise ValueError(f"the {name} set has labels up to {int(ds.labels.max())} but the model's head "
                             f"has {K} classes: replace the head (finetune.new_head(model, "
                             f"{int(ds.labels.max()) + 1}) / --finetune) or fix the labels")


def _derive(*keys):
    """One integer seed from a tuple of keys (for backends whose generators take an int)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class _Progress:
    """A one-line progress bar on a terminal; one line per epoch elsewhere (logs, CI)."""

    def __init__(self, stream, enabled):
        self.stream, self.enabled = stream, enabled
        self.live = enabled and hasattr(stream, "isatty") and stream.isatty()
        self._last = 0.0

    def update(self, epoch, epochs, s, steps, loss, ips, lr):
        now = time.perf_counter()
        if not self.live or (now - self._last < 0.1 and s < steps):
            return
        self._last = now
        done = int(20 * s / steps)
        self.stream.write(f"\repoch {epoch + 1}/{epochs} [{'=' * done}{' ' * (20 - done)}] {s}/{steps} "
                          f"loss {loss:.4f} lr {lr:.2e} {ips:.0f} img/s ")
        self.stream.flush()

    def epoch_done(self, row, epochs):
        if not self.enabled:
            return
        ev = (f" | eval loss {row['eval_loss']:.4f} top-1 {100 * row['eval_top1']:.2f}% "
              f"top-5 {100 * row['eval_top5']:.2f}%") if "eval_loss" in row else ""
        line = (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} top-1 "
                f"{100 * row['train_top1']:.2f}%{ev} | {row['img_per_s']:.0f} img/s, {row['epoch_s']:.1f} s")
        self.stream.write(f"\r{line}\x1b[K\n" if self.live else line + "\n")  # \x1b[K: clear the bar's tail
        self.stream.flush()
