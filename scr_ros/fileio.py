"""Atomic file and folder writes: a crash or a full disk never leaves half a file in place of a good one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .errors import ScrError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask. Read from /proc where it is shown (Linux 4.7+), since setting it to
    read it back is not thread-safe; otherwise set and restored under a lock."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less the umask):
    ``mkstemp`` creates 0600, which would hide maps and keyframes from other users, such as a
    relocalizer node running under another account.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _check_writable_from(start: Path, path: Path, what: str) -> None:
    """The nearest existing folder at or above ``start`` must be a folder we may write into
    (folders missing below it are created when the output is written)."""
    probe = start
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ScrError(f"cannot write {what} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ScrError(f"cannot write {what} {path}: no permission to write in {probe}")


def check_output_file(path: str | os.PathLike, what: str = "output", replaceable=None) -> Path:
    """Refuse, before any long work, an output file that could not be written at the end.

    The target must not be a directory and its folder must be writable (see
    :func:`_check_writable_from`); an existing file is replaced only when ``replaceable(path)``
    (when given) returns None, and otherwise refused with the reason it returns. Raises
    :class:`ScrError` naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ScrError(f"{what} {path} is a directory; give a file name")
    _check_writable_from(path.parent, path, what)
    if path.exists() or path.is_symlink():
        why = replaceable(path) if replaceable is not None else None
        if why:
            raise ScrError(f"refusing to replace {path}: {why}")
    return path


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Like :func:`check_output_file` for a folder that is created or written into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ScrError(f"{what} {path} exists and is not a directory")
    _check_writable_from(path, path, what)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_between_markers(path: str | os.PathLike, begin: str, end: str, body: str, what: str = "generated") -> Path:
    """Replace what stands between the lines ``begin`` and ``end`` of the text file ``path`` with
    ``body`` (atomically). A file without both markers is refused, so generated text never lands
    where nobody reads it."""
    text = Path(path).read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise ScrError(f"{path} has no {what} markers ({begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return atomic_write_text(path, f"{head}{begin}\n{body.strip()}\n{end}{tail}")


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_staging(path: Path, suffix: str, restore: str | None = None, infix: str = ".") -> list[Path]:
    """Remove the hidden staging folders (``.NAME<infix>*<suffix>`` beside ``path``) that a killed
    run of the same target left behind (SIGKILL cannot be caught). When ``path`` is missing and a
    staging folder holds ``restore`` (the previous output moved aside by a replace that was
    killed between its two renames), that is moved back first. Returns what was removed."""
    import glob

    removed = []
    for stale in sorted(path.parent.glob(f".{glob.escape(path.name)}{infix}*{suffix}")):
        if not stale.is_dir():
            continue
        old = stale / restore if restore else None
        if old is not None and old.exists() and not (path.exists() or path.is_symlink()):
            os.replace(old, path)
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False, is_replaceable=None):
    """Build a folder (a rosbag2 bag) out of sight and move it into place when complete.

    Yields a path that does not exist yet, with the same name as ``path`` (rosbag2 names its
    storage file after the folder), inside a hidden staging folder next to ``path``. On success
    it is renamed to ``path``; on any error or Ctrl-C the staging folder is deleted and an
    existing ``path`` is untouched. An existing ``path`` is an error unless ``replace``; then
    ``is_replaceable(path)`` (when given) must agree, so a typo cannot delete an unrelated folder.
    """
    path = Path(path)
    remove_stale_staging(path, ".partial", restore=path.name + ".old")
    if path.exists() or path.is_symlink():
        if not replace:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
        if is_replaceable is not None and not is_replaceable(path):
            raise FileExistsError(f"{path} exists and is not what this command writes; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging / path.name
        if path.exists():
            old = staging / (path.name + ".old")
            os.replace(path, old)  # a folder cannot replace a non-empty folder in one rename
            try:
                os.replace(staging / path.name, path)
            except BaseException:
                os.replace(old, path)
                raise
        else:
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
