"""Saving never destroys what is not a regular file, and never leaves half a file.

Every writer goes through ``npvit/formats/atomic.py``: ``model.save`` / ``npvit.save``, the timm
export (``npvit convert``), training checkpoints and exports, the safetensors writer.  A target
that is a directory, a device node, a FIFO or a socket is refused and left exactly as it was (as
root, a plain ``os.replace`` would turn a character device into a regular file).  A symbolic link
is followed: the file it points to is replaced and the link stays a link.
"""
import os
import signal
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

import npvit
from npvit.formats.atomic import NotARegularFileError, atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model():
    return npvit.VisionTransformer(npvit.ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                                   num_classes=3))


def _writers():
    from npvit.formats.export import save_timm
    from npvit.formats.safetensors import write_safetensors
    from npvit.train.export import export_model

    m = _model()
    return {
        "model.save": lambda p: m.save(p),
        "npvit.save": lambda p: npvit.save(m, p),
        "save_timm": lambda p: save_timm(m, p),
        "export_model": lambda p: export_model(m, p, storage="float16"),
        "write_safetensors": lambda p: write_safetensors(p, {"w": np.zeros(3, np.float32)}),
        "save_checkpoint": lambda p: _train_checkpoint(m, p),
    }


def _train_checkpoint(model, path):
    from npvit import optim
    from npvit.train.checkpoint import save_checkpoint

    return save_checkpoint(path, model, optim.SGD(model, lr=0.1), {"epoch": 0, "step": 0})


def _make(kind, path):
    """Create a non-regular file of ``kind`` at ``path``; returns a closer (sockets) or None."""
    if kind == "directory":
        os.mkdir(path)
        (path / "keep.txt").write_text("mine")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return s.close
    elif kind == "char_device":
        try:  # the same device numbers as /dev/null; needs CAP_MKNOD (root in most containers)
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError) as exc:
            pytest.skip(f"cannot create a device node here ({exc})")
    return None


def _fingerprint(path):
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev


@pytest.mark.parametrize("kind", ["directory", "fifo", "socket", "char_device"])
@pytest.mark.parametrize("writer", sorted(_writers()))
def test_non_regular_targets_are_refused_and_untouched(tmp_path, kind, writer):
    target = tmp_path / ("t.safetensors" if writer in ("save_timm", "write_safetensors") else "t.npz")
    close = _make(kind, target)
    try:
        before = _fingerprint(target)
        with pytest.raises(NotARegularFileError, match=f"cannot write {target}: it is a"):
            _writers()[writer](target)
        assert _fingerprint(target) == before
        if kind == "directory":
            assert os.listdir(target) == ["keep.txt"]
        assert sorted(os.listdir(tmp_path)) == ["t.npz" if target.name == "t.npz" else "t.safetensors"], \
            "a temporary file was left behind"
    finally:
        if close:
            close()


def test_control_a_regular_file_is_replaced_atomically_with_its_mode(tmp_path):
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    _model().save(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert npvit.load(target).config.embed_dim == 8
    assert os.listdir(tmp_path) == ["m.npz"]


def test_symlinks_are_followed_and_stay_links(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    _model().save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert npvit.load(real).config.embed_dim == 8
    dangling = tmp_path / "new_link.npz"                     # to a name not yet written
    dangling.symlink_to(tmp_path / "created.npz")
    _model().save(dangling)
    assert dangling.is_symlink() and npvit.load(tmp_path / "created.npz").config.depth == 1
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    with pytest.raises(NotARegularFileError, match="symbolic link that loops"):
        _model().save(loop)
    to_dir = tmp_path / "to_dir.npz"
    (tmp_path / "d").mkdir()
    to_dir.symlink_to(tmp_path / "d")
    with pytest.raises(NotARegularFileError, match=r"d \(through the link .*to_dir\.npz\): it is a directory"):
        _model().save(to_dir)


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "m.npz"
    code = ("import os, signal, sys; from npvit.formats.atomic import atomic_write\n"
            "def write(f):\n    f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            "atomic_write(sys.argv[1], write)\n")
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if n != "m.npz"]
    assert len(left) == 1 and left[0].startswith(".m.npz.npvit-") and not target.exists()
    alive = tmp_path / f".m.npz.npvit-{os.getpid()}-inflight.tmp"   # a writer still running: kept
    alive.write_bytes(b"")
    _model().save(target)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", alive.name])
    assert npvit.load(target).config.embed_dim == 8


def test_convert_force_onto_a_directory_is_refused_before_loading(tmp_path, capsys):
    from npvit.cli import main

    src = _model().save(tmp_path / "m.npz")
    (tmp_path / "out.npz").mkdir()
    assert main(["convert", str(src), str(tmp_path / "out.npz"), "--force"]) == 2
    err = capsys.readouterr().err
    assert "npvit convert: error: cannot write" in err and "it is a directory" in err
    assert os.path.isdir(tmp_path / "out.npz") and os.listdir(tmp_path / "out.npz") == []


def test_atomic_write_error_in_the_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, write)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
