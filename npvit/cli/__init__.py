"""The ``npvit`` command line: one subcommand per module in this folder.

Each module listed in ``COMMANDS`` defines ``add_parser(subparsers)``, which registers its
subcommand and sets ``func`` (called with the parsed args, returning an exit code).
"""
import argparse
import importlib
import sys

COMMANDS = ("predict", "convert", "train", "explain")


def build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(prog="npvit", description="Vision Transformer in NumPy")
    parser.add_argument("--version", action="version", version=f"npvit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, OSError, RuntimeError) as exc:  # OSError: unwritable targets, full disks
        print(f"npvit {args.command}: error: {exc}", file=sys.stderr)
        return 2
