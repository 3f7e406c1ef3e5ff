"""``npvit convert SRC DST [--to npvit|timm]``: any readable checkpoint -> npvit .npz or a timm state dict.

    npvit convert ViT-B_16.npz b16_npvit.npz                  # official npz -> npvit's own file
    npvit convert hf_folder/ vit.safetensors --to timm        # -> timm state dict (NumPy writer)
    npvit convert deit.pth deit.npz --num-heads 3             # settings the source lacks

``--to`` defaults to npvit for .npz targets and timm for .safetensors/.pth/.pt/.bin.
"""
import argparse
import os
import warnings

EXAMPLES = """examples:
  npvit convert ViT-B_16.npz b16.npz                       # official npz -> npvit's own file
  npvit convert hf_folder/ vit.safetensors --to timm       # -> timm state dict (NumPy writer)
  npvit convert vit.pth vit.npz --num-heads 4 --img-size 384
"""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to npvit's .npz or a timm state dict",
        description="Convert any checkpoint npvit reads (format detected from the content) to "
                    "npvit's .npz or to a timm-layout state dict (.safetensors, or .pth with torch).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="checkpoint file or model folder (format detected from its content)")
    p.add_argument("dst", help="output file (.npz for npvit; .safetensors or .pth for timm)")
    p.add_argument("--to", choices=("npvit", "timm"), default=None,
                   help="output layout (default: from DST's suffix)")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads, where SRC does not record them")
    p.add_argument("--img-size", type=int, nargs="+", default=None, metavar="S",
                   help="image size (one value, or H W): resamples the position embedding")
    p.add_argument("--gelu", choices=("exact", "tanh"), default=None, help="override the GELU form")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="dtype of an npvit file (default: the source's, float32 for others)")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..formats import load, save
    from ..formats.atomic import resolve_target
    from ..formats.export import TORCH_SUFFIXES, save_timm

    to = args.to or ("npvit" if args.dst.endswith(".npz") else
                     "timm" if args.dst.endswith((".safetensors",) + TORCH_SUFFIXES) else None)
    if to is None:
        raise ValueError(f"cannot tell the output format from {args.dst!r}: use a .npz (npvit) or "
                         ".safetensors/.pth (timm) name, or pass --to")
    if os.path.lexists(args.dst) and not args.force:
        raise ValueError(f"{args.dst} exists; pass --force to overwrite it")
    resolve_target(args.dst)  # a folder, device, FIFO or socket is refused before any work
    overrides = {}
    if args.num_heads is not None:
        overrides["num_heads"] = args.num_heads
    if args.img_size is not None:
        if len(args.img_size) not in (1, 2):
            raise ValueError("--img-size takes one value (square) or two (H W)")
        overrides["img_size"] = tuple(args.img_size) if len(args.img_size) == 2 else args.img_size[0]
    if args.gelu is not None:
        overrides["gelu"] = args.gelu
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(args.src, dtype=args.dtype, **overrides)
    for w in caught:
        print(f"note: {w.message}")
    if to == "npvit":
        save(model, args.dst)
        notes = []
    else:
        notes = save_timm(model, args.dst)
    for n in notes:
        print(f"note: the model {n}")
    print(f"wrote {args.dst} ({to}): {model!r}")
    return 0
