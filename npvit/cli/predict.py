"""``npvit predict MODEL IMAGE...``: classify image files (or folders of them) with a checkpoint.

MODEL is anything ``npvit.load`` reads. Each IMAGE is a file or a folder (its image files,
recursively, sorted by path). Images are read and run ``--batch-size`` at a time; a progress bar
goes to stderr when it is a terminal (or with ``--progress``). Output, on stdout:

    text    one line per image:  path: label (0.8123), label (0.0456), ...
    --json  one JSON array:      [{"path": ..., "predictions": [{"label": ..., "probability": ...}]}]

A file that cannot be read is reported (stderr, or an "error" entry in JSON) and skipped; the exit
status is then 1.

``--scheduler ADDRESS`` runs the batches on an existing Dask cluster (``tcp://host:8786``), and
``--scheduler local:N`` on N worker processes started here (``pip install 'npvit[dask]'``).  Each
worker opens MODEL itself, once; the images are read on the workers, so their paths must be
valid there.  The output is the same, in the same order; the progress bar counts finished batches.
"""
import json
import sys
import time
from pathlib import Path

from ..preprocess.config import PRESETS


def add_parser(subparsers):
    p = subparsers.add_parser(
        "predict", help="classify images with a checkpoint",
        description="Print the top-k classes of each image. MODEL: a checkpoint file or folder "
                    "(official/big_vision .npz, timm/DeiT/torchvision .pth/.safetensors, a Hugging "
                    "Face folder, npvit .npz). IMAGE: image files or folders of them.")
    p.add_argument("model", metavar="MODEL", help="checkpoint file or folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON array instead of text")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"),
                   help="array backend (cupy runs on a CUDA GPU)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--preprocess", choices=sorted(PRESETS),
                   help="preprocessing recipe to use instead of the checkpoint's own")
    p.add_argument("--labels", metavar="FILE",
                   help="text file with one class name per line, replacing the model's names")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786), or local:N for "
                        "N worker processes on this machine (pip install 'npvit[dask]')")
    p.set_defaults(func=run)
    return p


def run(args):
    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths = collect_images(args.images)
    _require_pillow()
    labels = _read_labels(args.labels) if args.labels else None
    if args.scheduler:
        return _run_on_dask(args, paths, labels)
    from .. import load  # lazily: loading pulls in the checkpoint formats

    model = load(args.model, backend=args.backend)
    if labels is not None and len(labels) != model.config.num_classes:
        raise ValueError(f"{args.labels} has {len(labels)} names but the model has "
                         f"{model.config.num_classes} classes")
    bar = Progress(len(paths), enabled=args.progress or sys.stderr.isatty())
    records, failed = [], 0
    for start in range(0, len(paths), args.batch_size):
        batch = paths[start:start + args.batch_size]
        results = _predict_batch(model, batch, args, labels)
        bar.clear()  # so that result lines do not land on the bar's line of the terminal
        for path, result in zip(batch, results):
            records.append((path, result))
            failed += isinstance(result, Exception)
            if not args.json:
                _print_text(path, result)
        bar.update(len(batch))
    bar.close()
    if args.json:
        json.dump([_json_record(p, r) for p, r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if failed else 0


def _run_on_dask(args, paths, labels):
    """``run`` with the batches computed on a Dask cluster; printed in input order as they finish."""
    from ..distributed.inference import connect, iter_batches

    bar = Progress(len(paths), enabled=args.progress or sys.stderr.isatty())
    records, failed, finished, printed = [], 0, {}, 0
    try:
        with connect(args.scheduler) as client:
            for start, results in iter_batches(client, args.model, [str(p) for p in paths], args.topk,
                                               args.batch_size, labels=labels, preprocess=args.preprocess,
                                               backend=args.backend):
                finished[start], done = results, len(results)
                bar.clear()
                while printed in finished:  # the next batch in input order is here: print it
                    results = finished.pop(printed)
                    for path, result in zip(paths[printed:printed + len(results)], results):
                        records.append((path, result))
                        failed += isinstance(result, Exception)
                        if not args.json:
                            _print_text(path, result)
                    printed += len(results)
                bar.update(done)
    except (ImportError, OSError) as exc:  # Dask is not installed; the scheduler cannot be reached
        raise RuntimeError(str(exc)) from None
    bar.close()
    if args.json:
        json.dump([_json_record(p, r) for p, r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if failed else 0


def collect_images(args):
    """Files as given, folders expanded to their image files (recursively, sorted)."""
    return [path for path, _ in image_inputs(args)]


def image_inputs(args):
    """[(path, its name relative to the folder it was found in)]: files as given (named by their
    file name), folders expanded to their image files (recursively, sorted)."""
    from ..preprocess.images import list_image_files

    items = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = list_image_files(p)
            if not found:
                raise ValueError(f"folder {p} holds no image files (looked for .jpg, .png, ... "
                                 "recursively)")
            items.extend((f, f.relative_to(p)) for f in found)
        elif p.exists():
            items.append((p, Path(p.name)))
        else:
            raise FileNotFoundError(f"image file or folder not found: {p}")
    return items


def _predict_batch(model, batch, args, labels):
    """One result per path: a list of (label, probability), or the exception that stopped it."""
    from ..predict import predict

    kwargs = dict(topk=args.topk, labels=labels, preprocess=args.preprocess)
    try:
        return predict(model, [str(p) for p in batch], batch_size=len(batch), **kwargs)
    except (ValueError, TypeError, OSError) as exc:
        if len(batch) == 1:
            return [exc]
    # Find which file spoiled the batch; run the others one by one.
    results = []
    for p in batch:
        try:
            results.append(predict(model, str(p), batch_size=1, **kwargs))
        except (ValueError, TypeError, OSError) as exc:
            results.append(exc)
    return results


def _print_text(path, result):
    if isinstance(result, Exception):
        print(f"npvit predict: {path}: {result}", file=sys.stderr)
        return
    print(f"{path}: " + ", ".join(f"{label} ({prob:.4f})" for label, prob in result), flush=True)


def _json_record(path, result):
    if isinstance(result, Exception):
        return {"path": str(path), "error": str(result)}
    return {"path": str(path),
            "predictions": [{"label": label, "probability": prob} for label, prob in result]}


def _require_pillow():
    from ..preprocess.images import import_pillow

    try:
        import_pillow()
    except ImportError as exc:  # the dispatcher reports RuntimeErrors as one clean line
        raise RuntimeError(str(exc)) from None


def _read_labels(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the labels file {path}: {exc.strerror or exc}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"labels file {path} is empty: write one class name per line")
    return names


class Progress:
    """``[#####-----]  40/100 images  12.3 img/s`` on stderr, redrawn in place with \\r."""

    WIDTH = 30

    def __init__(self, total, enabled=True, stream=None):
        self.total, self.done, self.enabled = total, 0, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._width = 0
        if enabled:
            self._draw()

    def update(self, n):
        self.done += n
        if self.enabled:
            self._draw()

    def clear(self):
        if self.enabled:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self):
        filled = self.WIDTH * self.done // max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        line = (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] "
                f"{self.done:>{len(str(self.total))}}/{self.total} images  {rate:.1f} img/s")
        self._width = len(line)
        self.stream.write("\r" + line)
        self.stream.flush()
