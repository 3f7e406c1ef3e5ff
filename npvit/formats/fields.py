"""JSON the checkpoint files carry, parsed and typed without trusting it.

    parse_json(text, where)          an object; duplicate keys, NaN and deep nesting refused
    read_json(path)                  a small JSON file (config.json, ...) as a dict
    Fields(d, where)                 typed access: .int("num_heads"), .number(...), .pair(...), ...
    vit_config(d, where)             a ViTConfig from a stored dict, every field type-checked
    preprocess_config(d, where)      a PreprocessConfig likewise

A wrong type is an error, never a conversion: ``int(True)`` is 1, so a boolean head count would
otherwise build a one-head model; ``float("nan")`` or ``"12"`` are refused the same way.  Every
problem is a ``CheckpointError`` that names the file, the field and what it holds.
"""
import json
import math
import os
import typing

from .errors import CheckpointError

MAX_JSON_BYTES = 16 << 20     # config.json and friends; a 21k-label config is ~1 MB
MAX_DEPTH = 32                # real configs nest 3 or 4 deep


def parse_json(text, where, max_entries=None):
    """A JSON object from ``text`` (str or bytes); duplicate keys and deep nesting are errors."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{where}: not UTF-8 text ({exc})") from None
    entries = [0]

    def pairs(items):
        entries[0] += len(items)
        if max_entries is not None and entries[0] > max_entries:
            raise CheckpointError(f"{where}: more than {max_entries:,} JSON entries: not a valid file")
        obj = {}
        for k, v in items:
            if k in obj:
                raise CheckpointError(f"{where}: key {k!r} appears twice in the JSON")
            obj[k] = v
        return obj

    try:
        obj = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    except CheckpointError:
        raise
    except RecursionError:  # the C parser stops at Python's recursion limit, before any harm
        raise CheckpointError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep: not a "
                              "checkpoint's") from None
    except ValueError as exc:
        raise CheckpointError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got a {type(obj).__name__}")
    if _depth(obj) > MAX_DEPTH:  # Python's own limit differs by version (3.13 parses 5,000 levels)
        raise CheckpointError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep: not a checkpoint's")
    return obj


def _depth(obj):
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d <= MAX_DEPTH:
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o)
                         if isinstance(v, (dict, list)))
    return deepest


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_json(path):
    """A JSON file holding an object, at most MAX_JSON_BYTES long."""
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size:,} bytes is too large for a config file "
                                  f"(limit {MAX_JSON_BYTES:,})")
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return parse_json(raw, path)
    except CheckpointError as exc:
        # keep the words the folder readers have always used for a broken config
        raise CheckpointError(f"{exc} (the file cannot be read as JSON)") from None


class Fields:
    """Typed reads from a parsed JSON object; ``where`` names the file (and section) in errors."""

    def __init__(self, d, where):
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected a JSON object, got {_show(d)}")
        self.d, self.where = d, where

    def __contains__(self, key):
        return key in self.d and self.d[key] is not None

    def _bad(self, key, expected):
        raise CheckpointError(f"{self.where}: {key} is {_show(self.d[key])}, expected {expected}")

    def int(self, key, default=None, minimum=None):
        if key not in self:
            return default
        v = self.d[key]
        if type(v) is not int or (minimum is not None and v < minimum):
            self._bad(key, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
        return v

    def number(self, key, default=None, positive=False):
        if key not in self:
            return default
        v = self.d[key]
        if type(v) not in (int, float) or not math.isfinite(v) or (positive and v <= 0):
            self._bad(key, "a positive number" if positive else "a number")
        return float(v)

    def bool(self, key, default=None):
        if key not in self:
            return default
        if type(self.d[key]) is not bool:
            self._bad(key, "true or false")
        return self.d[key]

    def str(self, key, default=None, choices=None):
        if key not in self:
            return default
        v = self.d[key]
        if not isinstance(v, str) or (choices is not None and v not in choices):
            self._bad(key, "one of " + ", ".join(map(repr, choices)) if choices else "a string")
        return v

    def pair(self, key, default=None):
        """An int (a square) or a list of two ints, as (height, width)."""
        if key not in self:
            return default
        v = self.d[key]
        if type(v) is int and v > 0:
            return (v, v)
        if isinstance(v, list) and len(v) == 2 and all(type(x) is int and x > 0 for x in v):
            return tuple(v)
        self._bad(key, "a positive integer or a list of two")

    def numbers(self, key, n, default=None):
        """A list of ``n`` finite numbers (a single number is repeated, as HF processors allow)."""
        if key not in self:
            return default
        v = self.d[key]
        if type(v) in (int, float) and math.isfinite(v):
            return (float(v),) * n
        if isinstance(v, list) and len(v) == n and all(type(x) in (int, float) and math.isfinite(x) for x in v):
            return tuple(float(x) for x in v)
        self._bad(key, f"a list of {n} numbers")

    def strings(self, key, default=None):
        if key not in self:
            return default
        v = self.d[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self._bad(key, "a list of strings")
        return tuple(v)

    def dict(self, key):
        """A nested object as Fields (empty when absent)."""
        if key not in self:
            return Fields({}, f"{self.where} {key}")
        if not isinstance(self.d[key], dict):
            self._bad(key, "an object")
        return Fields(self.d[key], f"{self.where} {key}")


def _show(v):
    text = json.dumps(v) if _jsonable(v) else repr(v)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = _json_type(v)
    return f"{text} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def _json_type(v):
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)


# --- dataclass configs stored as JSON ---------------------------------------------------------------
def _matches(hint, v, name=""):
    """True if the JSON value ``v`` has the type ``hint`` (a dataclass field's annotation)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return v is None
    if origin is typing.Union:
        return any(_matches(a, v, name) for a in args)
    if hint is bool:
        return type(v) is bool
    if hint is int:
        return type(v) is int
    if hint is float:
        return type(v) in (int, float) and math.isfinite(v)
    if hint is str:
        return isinstance(v, str)
    if origin is tuple:  # stored as a JSON list
        if not isinstance(v, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], x) for x in v)
        return len(v) == len(args) and all(_matches(a, x) for a, x in zip(args, v))
    if hint is tuple:    # label names: strings; per-stage settings (Swin's depths, heads): integers
        item = str if name == "label_names" else int
        return isinstance(v, list) and all(type(x) is item for x in v)
    return True          # a kind of field this check does not know: the constructor validates it


def _typed_dataclass(cls, d, where):
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: expected an object, got {_show(d)}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise CheckpointError(f"{where}: unknown setting(s) {unknown}")
    for k, v in d.items():
        if not _matches(hints[k], v, k):
            raise CheckpointError(f"{where}: {k} is {_show(v)}, which is not a valid {k}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def vit_config(d, where):
    """A ViTConfig from ``ViTConfig.to_dict()`` output read back from a file."""
    from ..model.config import ViTConfig

    return _typed_dataclass(ViTConfig, d, where)


def swin_config(d, where):
    """A SwinConfig from ``SwinConfig.to_dict()`` output read back from a file."""
    from ..model.config import SwinConfig

    return _typed_dataclass(SwinConfig, d, where)


def preprocess_config(d, where):
    """A PreprocessConfig from ``PreprocessConfig.to_dict()`` output read back from a file."""
    from ..preprocess.config import PreprocessConfig

    return _typed_dataclass(PreprocessConfig, d, where)
