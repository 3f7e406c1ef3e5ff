"""Write a file atomically: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or an error half-way leaves the old file (or none) in place, never a truncated one.

What a target may be:
- a new name, or an existing regular file, which is replaced (keeping its permission bits);
- a symbolic link to a regular file (or to a new name in an existing folder): the link is followed
  and the file it points to is replaced, so the link stays a link, as ``open(path, "w")`` would
  leave it; a link that loops is refused;
- anything else (a directory, a device node, a FIFO, a socket) is refused with
  ``NotARegularFileError`` and left untouched: ``os.replace`` would otherwise swap it for a
  regular file, which, as root, turns ``/dev/...`` into a checkpoint.

Temporary files are named ``.<name>.npvit-<pid>-<random>.tmp``.  A writer killed half-way leaves
one behind; the next write to the same target deletes those whose process no longer runs.
"""
import glob
import os
import stat
import tempfile

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


class NotARegularFileError(OSError):
    """The target exists and is not a regular file: npvit will not replace it."""


def resolve_target(path):
    """``(path to write, its os.stat or None)``; refuses targets that are not regular files."""
    path = os.fspath(path)
    real = path
    if os.path.islink(path):
        real = os.path.realpath(path)
        if os.path.islink(real):
            raise NotARegularFileError(f"cannot write {path}: it is a symbolic link that loops "
                                       "(or is too deep to follow)")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        via = f" (through the link {path})" if real != path else ""
        raise NotARegularFileError(
            f"cannot write {real}{via}: it is {kind}, not a regular file; npvit writes only to "
            "regular files or new names, and leaves this one untouched")
    folder = os.path.dirname(os.path.abspath(real))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    return real, st


def remove_stale_temps(path):
    """Delete ``.<name>.npvit-<pid>-*.tmp`` files beside ``path`` whose writer process is gone."""
    folder, name = os.path.split(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(folder), glob.escape(f".{name}.npvit-") + "*.tmp")):
        pid = os.path.basename(tmp)[len(f".{name}.npvit-"):].split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        try:
            if stat.S_ISREG(os.lstat(tmp).st_mode):
                os.unlink(tmp)
        except OSError:
            pass


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write(path, write):
    """Call ``write(f)`` on a binary temp file next to ``path``, then move it into place."""
    target, st = resolve_target(path)
    remove_stale_temps(target)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.npvit-{os.getpid()}-", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:      # the replaced file's permission bits
            mode = stat.S_IMODE(st.st_mode)
        else:                   # mkstemp made it 0600; give it what a plain open() would (0666 - umask)
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        resolve_target(target)  # still a regular file (or nothing) just before the swap
        os.replace(tmp, target)
        _fsync_folder(folder)   # the rename itself survives a crash too
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
