"""``npvit explain MODEL IMAGE... --out PATH``: heatmaps of what a model looks at (npvit.explain).

MODEL is anything ``npvit.load`` reads; each IMAGE a file or a folder (its image files,
recursively, sorted by path).  ``--method``: ``gradient`` (Chefer et al.'s gradient x attention,
the default), ``rollout`` (attention rollout) or ``saliency`` (the input gradient's largest
|value| over the channels).  The first two need a ViT/DeiT; ``saliency`` works for every model.
The class explained is each image's top class, or ``--target`` (an index or a label name).

Output:
    pictures   per image the heatmap over the original picture at its own size, as PNG.  One
               image file and an --out with an image suffix (out.png, out.jpg): that file.
               Otherwise --out is a folder (made if needed): OUT/<name>.png for a file given,
               OUT/<path inside the folder>.png for a folder given.
    --json     the maps themselves, one JSON array written to --out ("-": stdout):
               [{"path", "method", "target", "label", "probability", "grid": [[...], ...]}]
               (grid: the patch grid, or for saliency the model's input pixels).

Each picture written gets one line on stdout: ``path -> out (label, probability)``.  A file that
cannot be read is reported on stderr and skipped; the exit status is then 1.
"""
import json
import sys
from pathlib import Path

from ..preprocess.config import PRESETS

METHODS = ("gradient", "rollout", "saliency")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "explain", help="heatmaps of what a model looks at",
        description="Write, per image, a heatmap of what the model looks at, over the picture (or "
                    "the maps as JSON). MODEL: a checkpoint file or folder. IMAGE: image files or "
                    "folders of them.")
    p.add_argument("model", metavar="MODEL", help="checkpoint file or folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--method", choices=METHODS, default="gradient",
                   help="gradient: gradient x attention (Chefer et al. 2021, default); rollout: "
                        "attention rollout (Abnar & Zuidema 2020); saliency: input gradient (any model)")
    p.add_argument("--target", metavar="CLASS",
                   help="class to explain, an index or a label name (default: each image's top class)")
    p.add_argument("--out", metavar="PATH", required=True,
                   help="output picture (one image), folder, or with --json the JSON file ('-': stdout)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default 0.5)")
    p.add_argument("--json", action="store_true", help="write the maps as JSON instead of pictures")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="rollout: how the heads are combined (default mean)")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="rollout: fraction of the lowest attentions dropped per block (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="images per pass (default 8)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"), help="array backend")
    p.add_argument("--preprocess", choices=sorted(PRESETS),
                   help="preprocessing recipe to use instead of the checkpoint's own")
    p.set_defaults(func=run)
    return p


def run(args):
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not 0.0 <= args.discard_ratio < 1.0:
        raise ValueError(f"--discard-ratio must be in [0, 1), got {args.discard_ratio}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    from .predict import image_inputs

    items = image_inputs(args.images)          # [(path, name under the output folder)]
    targets = None if args.json else _output_paths(items, args.out, args.images)
    if args.json and args.out != "-":
        from ..formats.atomic import resolve_target

        resolve_target(args.out)     # a writable name (its folder exists), before any work is done
    from .predict import _require_pillow

    _require_pillow()
    from .. import load  # lazily: loading pulls in the checkpoint formats
    from ..model.vit import VisionTransformer

    model = load(args.model, backend=args.backend)
    if not model.config.num_classes:
        raise ValueError(f"{args.model} has no classification head (num_classes=0): there is no "
                         "class to explain")
    if args.method != "saliency" and not isinstance(model, VisionTransformer):
        raise ValueError(f"--method {args.method} needs global attention (a ViT or DeiT); "
                         f"{args.model} is a {type(model).__name__}, which attends within windows: "
                         "use --method saliency")
    target = _parse_target(args.target, model)
    records, failed = [], 0
    for start in range(0, len(items), args.batch_size):
        batch = items[start:start + args.batch_size]
        for (path, _), result in zip(batch, _explain_batch(model, [p for p, _ in batch], args, target)):
            if isinstance(result, Exception):
                print(f"npvit explain: {path}: {result}", file=sys.stderr)
                failed += 1
                continue
            if args.json:
                records.append(_json_record(path, args.method, result))
            else:
                _write_picture(path, targets[path], result, model, args)
    if args.json:
        _write_json(args.out, records)
    return 1 if failed else 0


# --- inputs and outputs -------------------------------------------------------------------------
def _output_paths(items, out, args):
    """{input path: picture to write}; refuses two inputs that would land on one file."""
    from ..preprocess.images import IMAGE_SUFFIXES

    out = Path(out)
    single = len(args) == 1 and len(items) == 1 and not Path(args[0]).is_dir()
    if single and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir():
        return {items[0][0]: out}
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, but these inputs need a folder: pass a folder "
                         "(made if missing), or one image file and an --out ending in .png")
    paths, seen = {}, {}
    for path, name in items:
        target = out / name.with_suffix(".png")
        if target in seen:
            raise ValueError(f"{seen[target]} and {path} would both be written to {target}: "
                             "rename one, or run them separately")
        seen[target], paths[path] = path, target
    return paths


def _parse_target(text, model):
    """--target as a class index: an integer, or one of the model's label names."""
    if text is None:
        return None
    from ..labels import label_names_for

    K = model.config.num_classes
    names = label_names_for(K, model.config)
    if text in names:                      # a name first: the digits model's labels are "0".."9"
        return names.index(text)
    try:
        index = int(text)
    except ValueError:
        raise ValueError(f"--target {text!r} is neither a class index (0 to {K - 1}) nor one of "
                         "the model's label names") from None
    if not 0 <= index < K:
        raise ValueError(f"--target {index} is out of range for {K} classes (0 to {K - 1})")
    return index


def _explain_batch(model, paths, args, target):
    """One result per path: a dict (pixels, map, class, probability), or the error that stopped it."""
    import numpy as np

    from .. import explain
    from ..predict import resolve_preprocess, softmax64
    from ..preprocess.images import to_rgb
    from ..preprocess.transform import transform_one

    cfg = resolve_preprocess(model, args.preprocess)
    results, pictures, inputs = [], [], []
    for p in paths:
        try:
            rgb = to_rgb(str(p))
            inputs.append(transform_one(rgb, cfg))
            pictures.append(rgb)
            results.append(None)
        except (ValueError, TypeError, OSError) as exc:
            results.append(exc)
    if not inputs:
        return results
    be = model.backend
    x = be.from_numpy(np.stack(inputs), dtype=model.dtype)
    probs = softmax64(be.to_numpy(model.forward(x)))                                 # (b, K)
    classes = probs.argmax(axis=1) if target is None else np.full(len(inputs), target)
    if args.method == "rollout":
        maps = explain.rollout(model, x, args.head_fusion, args.discard_ratio)
    elif args.method == "gradient":
        maps = explain.gradient_attention(model, x, classes)
    else:
        maps = explain.saliency_map(explain.input_gradients(model, x, classes))
    maps = be.to_numpy(maps).astype(np.float64)
    from ..labels import label_names_for

    names = label_names_for(model.config.num_classes, model.config)
    done = iter(range(len(inputs)))
    for k, r in enumerate(results):
        if r is None:
            i = next(done)
            results[k] = dict(picture=pictures[i], map=maps[i], cls=int(classes[i]), label=names[classes[i]],
                              probability=float(probs[i, classes[i]]), preprocess=cfg)
    return results


def _write_picture(path, target, result, model, args):
    from .. import explain
    from ..formats.atomic import atomic_write
    from ..preprocess.images import import_pillow

    Image = import_pillow()
    pixels = explain.overlay(result["picture"], result["map"], args.alpha, result["preprocess"])
    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    atomic_write(target, lambda f: Image.fromarray(pixels).save(f, format=fmt))
    print(f"{path} -> {target} ({result['label']}, {result['probability']:.4f})", flush=True)


def _json_record(path, method, result):
    return {"path": str(path), "method": method, "target": result["cls"], "label": result["label"],
            "probability": result["probability"], "grid": result["map"].tolist()}


def _write_json(out, records):
    # one record per line: a file of many images stays readable line by line
    text = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"
    if out == "-":
        sys.stdout.write(text)
        return
    from ..formats.atomic import atomic_write

    atomic_write(out, lambda f: f.write(text.encode("utf-8")))
