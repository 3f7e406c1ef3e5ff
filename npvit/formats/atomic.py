"""Write a file atomically: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or an error half-way leaves the old file (or none) in place, never a truncated one.
"""
import os
import tempfile


def atomic_write(path, write):
    """Call ``write(f)`` on a binary temp file next to ``path``, then move it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file owner-only (0600); give it the mode a plain open() would (0666 - umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
