"""Fuzz every checkpoint format npvit reads: mutate small valid files, load each mutant, and
allow only two outcomes, a clean load or a ``CheckpointError``.

    python tools/fuzz_formats.py [--count N] [--seed S] [--timeout SEC] [--memory-mib MIB] [--keep DIR]

Seeds (tiny models, written by npvit and NumPy alone; the PyTorch ones only when torch is here):
npvit .npz, npvit's float16 export (deflated .npz), timm .npz / .safetensors (with and without
npvit's metadata), official and big_vision .npz, Hugging Face folders (single file and sharded),
a timm hub folder, a Swin Transformer (npvit .npz, timm .safetensors), and timm / torchvision /
legacy (non-zip) ``.pth`` files.

Mutations: truncation, byte flips in the header and in the body, insertions, deletions; inside zip
archives, rewrites of a member's ``.npy`` header, of the zip's own records (sizes, methods, names),
and of the npvit JSON member; rewrites of JSON fields (safetensors headers, config.json,
preprocessor_config.json, the shard index, npvit's metadata) with hostile values (wrong types,
huge numbers, deep nesting, deletions).

Loads run in a worker process (``--worker``, restarted when needed): a load still running after
``--timeout`` seconds gets the worker killed and counts as a hang; each load's peak resident memory
above what the worker held before it (``VmHWM`` after a reset through ``/proc/self/clear_refs``,
minus ``VmRSS``) counts as a failure above ``--memory-mib``; the worker's address space is capped
(``RLIMIT_AS``, 4 GiB above its size at start) so a runaway allocation cannot take the machine down.
Exit status 1 when anything but a clean load or a CheckpointError happened; ``--keep DIR`` keeps
those mutants for replay (``python -c "import npvit; npvit.load('DIR/...')"``).
"""
import argparse
import collections
import io
import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import npvit  # noqa: E402
from npvit.formats import CheckpointError  # noqa: E402

HOSTILE = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, -2**63, 2**64 + 1, 10**400 // 10**300,
           0.5, -0.0, 1e308, float("nan"), float("inf"), "", "x", "gelu", "vit", "F32", "I64",
           "BOOL", "token", "avg", [], [0], [1, 2], [-1], [2**40, 2**40], [0, 2**62], {}, {"a": 1},
           "\u0000", "\ud800"]
DEEP = "<<DEEP>>"           # replaced by 50,000 nested brackets in the serialised JSON


# --- seeds --------------------------------------------------------------------------------------
def tiny_model():
    cfg = npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3,
                          label_names=("cat", "dog", "eel"))
    return npvit.VisionTransformer(cfg, seed=1)


def _timm_state(model):
    return {k: np.asarray(v, np.float32) for k, v in model.state_dict().items()}


def _official(sd, D=16, H=2, stacked=False, prefix=""):
    hd = D // H
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["patch_embed.proj.bias"],
           "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
           "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    if stacked:  # big_vision, gap pooling: no class token, position embedding at the top
        out["pos_embedding"] = sd["pos_embed"][:, 1:]
        mha, ln2, mlp = "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    else:
        out["cls"] = sd["cls_token"]
        out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
        mha, ln2, mlp = "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
    blocks = []
    for i in range(2):
        b = f"blocks.{i}."
        q, k, v = np.split(sd[b + "attn.qkv.weight"], 3)
        qb, kb, vb = np.split(sd[b + "attn.qkv.bias"], 3)
        blk = {"LayerNorm_0/scale": sd[b + "norm1.weight"], "LayerNorm_0/bias": sd[b + "norm1.bias"],
               f"{ln2}/scale": sd[b + "norm2.weight"], f"{ln2}/bias": sd[b + "norm2.bias"],
               f"{mha}/out/kernel": sd[b + "attn.proj.weight"].T.reshape(H, hd, D),
               f"{mha}/out/bias": sd[b + "attn.proj.bias"],
               f"{mlp}/Dense_0/kernel": sd[b + "mlp.fc1.weight"].T, f"{mlp}/Dense_0/bias": sd[b + "mlp.fc1.bias"],
               f"{mlp}/Dense_1/kernel": sd[b + "mlp.fc2.weight"].T, f"{mlp}/Dense_1/bias": sd[b + "mlp.fc2.bias"]}
        for n, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            blk[f"{mha}/{n}/kernel"], blk[f"{mha}/{n}/bias"] = w.T.reshape(D, H, hd), bias.reshape(H, hd)
        blocks.append(blk)
    for key in blocks[0]:
        if stacked:
            out[f"Transformer/encoderblock/{key}"] = np.stack([blk[key] for blk in blocks])
        else:
            for i, blk in enumerate(blocks):
                out[f"Transformer/encoderblock_{i}/{key}"] = blk[key]
    return {prefix + k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _hf(sd, prefix="vit."):
    out = {prefix + "embeddings.cls_token": sd["cls_token"],
           prefix + "embeddings.position_embeddings": sd["pos_embed"],
           prefix + "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           prefix + "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           prefix + "layernorm.weight": sd["norm.weight"], prefix + "layernorm.bias": sd["norm.bias"],
           "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    for i in range(2):
        b, h = f"blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for n, part in zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.weight"], 3)):
            out[f"{h}attention.attention.{n}.weight"] = part
        for n, part in zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.bias"], 3)):
            out[f"{h}attention.attention.{n}.bias"] = part
        for src, dst in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                         ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                         ("mlp.fc2", "output.dense")):
            out[f"{h}{dst}.weight"], out[f"{h}{dst}.bias"] = sd[f"{b}{src}.weight"], sd[f"{b}{src}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _torchvision(sd):
    out = {"class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"],
           "conv_proj.weight": sd["patch_embed.proj.weight"], "conv_proj.bias": sd["patch_embed.proj.bias"],
           "encoder.ln.weight": sd["norm.weight"], "encoder.ln.bias": sd["norm.bias"],
           "heads.head.weight": sd["head.weight"], "heads.head.bias": sd["head.bias"]}
    for i in range(2):
        b, t = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        for src, dst in (("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.proj", "self_attention.out_proj"),
                         ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")):
            out[f"{t}{dst}.weight"], out[f"{t}{dst}.bias"] = sd[f"{b}{src}.weight"], sd[f"{b}{src}.bias"]
        out[t + "self_attention.in_proj_weight"] = sd[b + "attn.qkv.weight"]
        out[t + "self_attention.in_proj_bias"] = sd[b + "attn.qkv.bias"]
    return out


HF_CONFIG = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": 16,
             "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 8, "patch_size": 4,
             "num_channels": 3, "qkv_bias": True, "id2label": {"0": "cat", "1": "dog", "2": "eel"},
             "label2id": {"cat": 0, "dog": 1, "eel": 2}}
HF_PROCESSOR = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 1 / 255,
                "size": {"height": 8, "width": 8}, "image_processor_type": "ViTImageProcessor"}
TIMM_HUB = {"architecture": "vit_tiny_patch16_224", "num_classes": 3, "num_features": 16,
            "global_pool": "token", "model_args": {"img_size": 8, "patch_size": 4, "embed_dim": 16,
                                                   "depth": 2, "num_heads": 2},
            "label_names": ["cat", "dog", "eel"],
            "pretrained_cfg": {"input_size": [3, 8, 8], "interpolation": "bicubic", "crop_pct": 0.9,
                               "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def build_seeds(folder):
    """Write the seed files/folders; returns {name: (path, load kwargs)}."""
    from npvit.formats.export import save_timm
    from npvit.formats.safetensors import write_safetensors
    from npvit.train.export import export_model

    model = tiny_model()
    sd = _timm_state(model)
    j = lambda *p: os.path.join(folder, *p)  # noqa: E731
    seeds = {}
    model.save(j("native.npz"))
    seeds["native.npz"] = {}
    export_model(model, j("export_f16.npz"), storage="float16")
    seeds["export_f16.npz"] = {}
    save_timm(model, j("timm_meta.safetensors"))
    seeds["timm_meta.safetensors"] = {}
    write_safetensors(j("timm.safetensors"), sd)
    seeds["timm.safetensors"] = {"num_heads": 2}
    np.savez(j("timm.npz"), **{"module." + k: v for k, v in sd.items()})
    seeds["timm.npz"] = {"num_heads": 2}
    np.savez(j("official.npz"), **_official(sd, prefix="opt/target/"))
    seeds["official.npz"] = {}
    gap = npvit.VisionTransformer(model.config.replace(classifier="gap", label_names=None), seed=2)
    gap_sd = _timm_state(gap)
    gap_sd["cls_token"] = np.zeros((1, 1, 16), np.float32)                 # only to shape the writer
    gap_sd["pos_embed"] = np.concatenate([gap_sd["cls_token"], gap_sd["pos_embed"]], axis=1)
    bv = _official(gap_sd, stacked=True, prefix="params/")
    np.savez(j("big_vision.npz"), **bv)
    seeds["big_vision.npz"] = {}
    swin = npvit.create_model("swin_tiny_patch4_window7_224", embed_dim=8, depths=(1, 1), num_heads=(1, 2),
                              img_size=16, window_size=2, num_classes=3, drop_path_rate=0.0)
    swin.save(j("swin.npz"))
    seeds["swin.npz"] = {}
    save_timm(swin, j("swin_timm.safetensors"))
    seeds["swin_timm.safetensors"] = {}
    os.mkdir(j("hf"))
    write_safetensors(j("hf", "model.safetensors"), _hf(sd))
    with open(j("hf", "config.json"), "w") as f:
        json.dump(HF_CONFIG, f)
    with open(j("hf", "preprocessor_config.json"), "w") as f:
        json.dump(HF_PROCESSOR, f)
    seeds["hf"] = {}
    os.mkdir(j("hf_sharded"))
    hf = _hf(sd, prefix="")
    names = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        write_safetensors(j("hf_sharded", shard), {k: hf[k] for k in keys})
    with open(j("hf_sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}, f)
    with open(j("hf_sharded", "config.json"), "w") as f:
        json.dump(dict(HF_CONFIG, architectures=["ViTModel"]), f)
    seeds["hf_sharded"] = {}
    os.mkdir(j("timm_hub"))
    write_safetensors(j("timm_hub", "model.safetensors"), sd)
    with open(j("timm_hub", "config.json"), "w") as f:
        json.dump(TIMM_HUB, f)
    seeds["timm_hub"] = {}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}, "epoch": 3}, j("timm.pth"))
        seeds["timm.pth"] = {"num_heads": 2}
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _torchvision(sd).items()},
                   j("torchvision.pth"))
        seeds["torchvision.pth"] = {"num_heads": 2}
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, j("legacy.pth"),
                   _use_new_zipfile_serialization=False)
        seeds["legacy.pth"] = {"num_heads": 2}
    return {name: (j(name), kw) for name, kw in seeds.items()}


# --- mutations ------------------------------------------------------------------------------------
def _hostile(rng):
    return rng.choice(HOSTILE + [DEEP])


def _dumps(obj):
    return json.dumps(obj).replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000)


def mutate_json(text, rng):
    """Rewrite, delete or add one field anywhere in a JSON text (JSON inside strings too)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return flip(text.encode("utf-8", "surrogatepass"), rng, 0, len(text)).decode("latin-1")
    nodes = []

    def walk(o, path):
        nodes.append(path)
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, path + [k])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, path + [i])

    walk(obj, [])
    path = rng.choice(nodes)
    if not path:
        return _dumps(_hostile(rng))
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    value = parent[key]
    action = rng.random()
    if isinstance(value, str) and value.startswith("{") and action < 0.5:
        parent[key] = mutate_json(value, rng)            # npvit.config inside safetensors metadata
    elif action < 0.15 and isinstance(parent, dict):
        del parent[key]
    elif action < 0.25 and isinstance(parent, dict):
        parent[rng.choice(["__metadata__", "x" * 300, "", "label_names", "num_heads", "blocks.9.norm1.weight"])] = \
            _hostile(rng)
    elif action < 0.35 and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = value + rng.choice([-1, 1, -value, 2**32, value * 1000])
    else:
        parent[key] = _hostile(rng)
    return _dumps(obj)


def flip(data, rng, lo, hi):
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        if hi > lo:
            data[rng.randrange(lo, hi)] ^= rng.choice([0x01, 0x80, 0xFF, rng.randrange(1, 256)])
    return bytes(data)


def _header_end(data):
    """Where a file's structure-heavy head ends (safetensors JSON; else the first 512 bytes)."""
    if len(data) > 8 and data[8:9] == b"{":
        return min(len(data), 8 + struct.unpack("<Q", data[:8])[0])
    return min(len(data), 512)


def mutate_bytes(data, rng):
    """One raw mutation of a file's bytes: ``(kind, new bytes)``."""
    n = len(data)
    head = _header_end(data)
    kind = rng.choice(["truncate", "flip_header", "flip_body", "flip_tail", "insert", "delete",
                       "safetensors_json", "zip"])
    if kind == "truncate":
        return kind, data[:rng.choice([0, 1, 7, 8, 9, rng.randrange(n), n - 1, n - rng.randrange(1, 64)])]
    if kind == "flip_header":
        return kind, flip(data, rng, 0, head)
    if kind == "flip_body":
        return kind, flip(data, rng, head, n)
    if kind == "flip_tail":  # a zip's central directory and end record sit at the end
        return kind, flip(data, rng, max(0, n - 2048), n)
    if kind == "insert":
        at = rng.randrange(n + 1)
        return kind, data[:at] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 8, 64]))) + data[at:]
    if kind == "delete":
        at = rng.randrange(n)
        return kind, data[:at] + data[at + rng.choice([1, 4, 100]):]
    if kind == "safetensors_json" and n > 8 and data[8:9] == b"{":
        (hn,) = struct.unpack("<Q", data[:8])
        text = mutate_json(data[8:8 + hn].decode("utf-8"), rng).encode("utf-8", "surrogatepass")
        return kind, struct.pack("<Q", len(text)) + text + data[8 + hn:]
    if data[:4] == b"PK\x03\x04":
        return mutate_zip(data, rng)
    return "flip_header", flip(data, rng, 0, head)


def _npy_member(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_header_rewrite(raw, rng):
    """Change a .npy header's shape, dtype or order, keeping the data (and the zip CRC) valid."""
    if not raw.startswith(b"\x93NUMPY"):
        return raw
    hlen = struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else struct.unpack("<I", raw[8:12])[0]
    start = 10 if raw[6] == 1 else 12
    header, body = raw[start:start + hlen].decode("latin-1"), raw[start + hlen:]
    d = eval(header, {"__builtins__": {}}, {})  # noqa: S307 - our own test data
    choice = rng.random()
    if choice < 0.5:
        d["shape"] = rng.choice([(2**40,), (2**31, 2**31), (0, 2**62), (0,), (), (1, 2**30),
                                 tuple(s * 2 for s in d["shape"]), tuple(d["shape"]) + (1,),
                                 tuple(reversed(d["shape"])), (10**9,), (-1,)])
    elif choice < 0.8:
        d["descr"] = rng.choice(["<f8", "|O", "<c8", "<U4", "|V2", "|V8", "|b1", ">f4", "<i8", "<M8[s]",
                                 [("a", "<f4")], "|S3"])
    else:
        d["fortran_order"] = not d["fortran_order"]
    text = repr(d).encode("latin-1")
    text += b" " * (-(start + len(text) + 1) % 64) + b"\n"
    if start == 10 and len(text) >= 65536:
        return raw
    return raw[:8] + (struct.pack("<H", len(text)) if start == 10 else struct.pack("<I", len(text))) + text + body


def mutate_zip(data, rng):
    """Zip-aware rewrites: a member's npy header or JSON, its name, or the zip records."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(i, z.read(i)) for i in z.infolist()]
    except Exception:  # noqa: BLE001 - already broken: fall back to a flip
        return "flip_header", flip(data, rng, 0, min(len(data), 512))
    kind = rng.choice(["npy_header", "npy_header", "member_json", "member_name", "zip_records", "member_huge",
                       "many_members"])
    idx = rng.randrange(len(members))
    info, raw = members[idx]
    if kind == "npy_header":
        members[idx] = (info, _npy_header_rewrite(raw, rng))
    elif kind == "member_json":
        meta = [i for i, (inf, _) in enumerate(members) if inf.filename in ("__npvit__.npy", "__train__.npy")]
        if meta:
            idx = meta[0]
            info, raw = members[idx]
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
            text = mutate_json(arr.tobytes().decode("utf-8"), rng).encode("utf-8", "surrogatepass")
            members[idx] = (info, _npy_member(np.frombuffer(text, np.uint8)))
        else:
            members[idx] = (info, _npy_header_rewrite(raw, rng))
    elif kind == "member_name":
        new = rng.choice(["../evil.npy", "/abs.npy", "a\\b.npy", "x.npy/", "", "é.npy", "data.pkl",
                          "archive/data.pkl", info.filename + info.filename, "__npvit__.npy",
                          info.filename.replace(".npy", "")])
        info = zipfile.ZipInfo(new, info.date_time)
        members[idx] = (info, raw)
    elif kind == "member_huge":  # a consistent npy claiming far more data than the file holds
        arr = np.zeros(rng.choice([2**20, 2**24]), np.float32)
        members[idx] = (info, _npy_member(arr))
        info.compress_type = zipfile.ZIP_DEFLATED
    elif kind == "many_members":
        members += [(zipfile.ZipInfo(f"extra{i}.npy"), _npy_member(np.zeros(1, np.float32)))
                    for i in range(rng.choice([100, 3000]))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # duplicate names are one of the mutations
        for inf, payload in members:
            zi = zipfile.ZipInfo(inf.filename or "_", inf.date_time)
            zi.compress_type = inf.compress_type
            if inf.filename == "":
                zi.filename = ""
            z.writestr(zi, payload)
    result = out.getvalue()
    if kind == "zip_records":
        result = _edit_zip_records(result, rng)
    return kind, result


def _edit_zip_records(data, rng):
    """Overwrite a field of a local or central header: version, flags, method, sizes, name length."""
    data = bytearray(data)
    sig = rng.choice([b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"])
    spots = [i for i in range(len(data) - 4) if data[i:i + 4] == sig]
    if not spots:
        return bytes(data)
    at = rng.choice(spots)
    fields = {b"PK\x03\x04": [(4, "H"), (6, "H"), (8, "H"), (18, "I"), (22, "I"), (26, "H"), (28, "H")],
              b"PK\x01\x02": [(6, "H"), (8, "H"), (10, "H"), (20, "I"), (24, "I"), (28, "H"), (30, "H"),
                              (42, "I")],
              b"PK\x05\x06": [(8, "H"), (10, "H"), (12, "I"), (16, "I"), (20, "H")]}[sig]
    off, fmt = rng.choice(fields)
    value = rng.choice([0, 1, 8, 12, 14, 20, 45, 63, 99, 0xFFFF, 0xFFFFFFFF, 2**31, 1 << 30])
    value &= 0xFFFF if fmt == "H" else 0xFFFFFFFF
    if at + off + struct.calcsize(fmt) <= len(data):
        struct.pack_into("<" + fmt, data, at + off, value)
    return bytes(data)


def mutate_seed(src, dst, rng):
    """Write a mutant of the seed file or folder ``src`` to ``dst``; returns a description."""
    if os.path.isdir(src):
        shutil.copytree(src, dst)
        name = rng.choice(sorted(os.listdir(dst)))
        path = os.path.join(dst, name)
        with open(path, "rb") as f:
            data = f.read()
        if name.endswith(".json") and rng.random() < 0.7:
            kind = "json_field"
            new = mutate_json(data.decode("utf-8"), rng).encode("utf-8", "surrogatepass")
        else:
            kind, new = mutate_bytes(data, rng)
        with open(path, "wb") as f:
            f.write(new)
        return f"{name}:{kind}"
    with open(src, "rb") as f:
        data = f.read()
    kind, new = mutate_bytes(data, rng)
    with open(dst, "wb") as f:
        f.write(new)
    return kind


# --- running ----------------------------------------------------------------------------------------
def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


SELFTESTS = {  # paths the worker treats as orders, for the test suite's negative controls
    ":escape:": lambda: (_ for _ in ()).throw(KeyError("not a CheckpointError")),
    ":hang:": lambda: time.sleep(3600),
    ":memory:": lambda: np.ones(512 << 17).sum(),           # 512 MiB of float64, every page touched
    ":crash:": lambda: os._exit(3),
}


def worker_main(preload_torch=True):
    """The worker: one JSON request per line on stdin, one JSON answer per line on stdout.

    Before each load the peak-RSS mark is reset (``/proc/self/clear_refs``), so the answer's
    ``grew`` is that load's own peak above what the worker already held.
    """
    if preload_torch:
        try:  # imported now, not inside the first timed .pth load
            import torch  # noqa: F401
        except ImportError:
            pass
    limit = _status_kib("VmSize") * 1024 + (4 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    out = sys.stdout
    sys.stdout = sys.stderr             # nothing a load prints can corrupt the answers
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = _status_kib("VmRSS")
        try:
            if req["path"] in SELFTESTS:
                SELFTESTS[req["path"]]()
            else:
                npvit.load(req["path"], **req["kwargs"])
            msg = "ok"
        except CheckpointError:
            msg = "CheckpointError"
        except BaseException as exc:  # noqa: BLE001 - anything else is the finding
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            msg = f"{type(exc).__module__}.{type(exc).__qualname__}: {first}"
        grew = (_status_kib("VmHWM") - start) * 1024
        out.write(json.dumps({"outcome": msg, "grew": grew}) + "\n")
        out.flush()


class Worker:
    """A worker process that loads files on request; a hung one is killed and replaced."""

    def __init__(self, preload_torch=True):
        self.proc, self.preload_torch = None, preload_torch

    def _start(self, startup_timeout=300):
        """Start a worker and wait until it has imported npvit (and torch), outside any timing."""
        args = ["--worker"] + ([] if self.preload_torch else ["--no-torch"])
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + args,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready, _, _ = select.select([self.proc.stdout], [], [], startup_timeout)
        if not ready or not self.proc.stdout.readline():
            self.close()
            raise RuntimeError(f"the fuzz worker did not start within {startup_timeout} s")

    def load(self, path, kwargs, timeout):
        """``(outcome, seconds, peak memory growth in bytes, -1 if unknown)``.

        outcome: "ok", "CheckpointError", "hang", "worker died ..." or "<module.Type>: message".
        """
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps({"path": path, "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        seconds = time.perf_counter() - t0
        if not ready:
            self.close()
            return "hang", seconds, -1
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return f"worker died (exit status {code})", seconds, -1
        answer = json.loads(line)
        return answer["outcome"], seconds, answer["grew"]

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def run(count=300, seed=0, timeout=5.0, memory_mib=256, keep=None, workdir=None, log=print):
    """Fuzz ``count`` mutants; returns a summary dict (see ``main`` for what is printed)."""
    rng = random.Random(seed)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="npvit-fuzz-")
    try:
        os.makedirs(os.path.join(workdir, "seeds"), exist_ok=True)
        seeds = build_seeds(os.path.join(workdir, "seeds"))
        worker = Worker()
        for name, (path, kw) in seeds.items():  # every seed must load: a fuzz of broken seeds proves nothing
            outcome, _, _ = worker.load(path, kw, timeout)
            if outcome != "ok":
                raise RuntimeError(f"seed {name} does not load: {outcome}")
        outcomes = collections.Counter()
        findings = []
        slowest = (0.0, "")
        most_memory = (0, "")
        names = sorted(seeds)
        for i in range(count):
            name = names[i % len(names)]
            src, kw = seeds[name]
            dst = os.path.join(workdir, "mutant" + ("" if os.path.isdir(src) else os.path.splitext(src)[1]))
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            what = f"{name} #{i} {mutate_seed(src, dst, rng)}"
            outcome, seconds, grew = worker.load(dst, kw, timeout)
            slowest = max(slowest, (seconds, what))
            most_memory = max(most_memory, (grew, what))
            bad = outcome not in ("ok", "CheckpointError") or grew > memory_mib << 20
            key = outcome.split(":")[0] if outcome not in ("ok", "CheckpointError") else outcome
            if grew > memory_mib << 20:
                key = "memory"
            outcomes[key] += 1
            if bad:
                findings.append((what, outcome, seconds, grew))
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    target = os.path.join(keep, f"{len(findings):03d}-{name}")
                    (shutil.copytree if os.path.isdir(dst) else shutil.copyfile)(dst, target)
                log(f"FOUND {what}: {outcome} ({seconds:.2f} s, +{grew / 2**20:.0f} MiB)")
        return {"count": count, "seeds": names, "outcomes": dict(outcomes), "findings": findings,
                "slowest": slowest, "most_memory": most_memory}
    finally:
        if "worker" in locals():
            worker.close()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000, help="mutants to try (default 2000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds a load may take (default 5)")
    p.add_argument("--memory-mib", type=int, default=256,
                   help="peak resident memory a load may add, MiB (default 256)")
    p.add_argument("--keep", metavar="DIR", help="copy every failing mutant here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-torch", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(preload_torch=not args.no_torch)
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"fuzzing {args.count} mutants, seed {seed}, timeout {args.timeout} s, memory {args.memory_mib} MiB")
    t0 = time.perf_counter()
    s = run(args.count, seed, args.timeout, args.memory_mib, args.keep)
    print(f"seeds: {', '.join(s['seeds'])}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items(), key=lambda kv: -kv[1])))
    print(f"slowest load: {s['slowest'][0]:.2f} s ({s['slowest'][1]}); largest memory growth: "
          f"{s['most_memory'][0] / 2**20:.1f} MiB ({s['most_memory'][1]}); {time.perf_counter() - t0:.0f} s in all")
    kinds = collections.Counter(f[1].split(":")[0] for f in s["findings"])
    print(f"findings: {len(s['findings'])} in {len(kinds)} kinds" +
          "".join(f"\n  {v:4d}  {k}" for k, v in kinds.most_common()))
    return 1 if s["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
