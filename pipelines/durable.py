"""Durable file operations: nothing is reported stored before it is on disk under its final name.

Shared by every room that writes files it must not lose (received instances, result folders, quarantine).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder_durably(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each new name fsynced into its parent (a new study or
    series folder must survive a crash as much as the file in it). Free when it exists."""
    if folder.is_dir():
        return
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def write_bytes_durably(target: Path, chunks: list[bytes | memoryview] | bytes, *, sync_dir: bool = True,
                        replace: bool = True) -> int:
    """Write ``chunks`` to a new file, fsync it, give it the name ``target`` (atomically: a crash leaves no file
    or the whole one), fsync the folder.

    Returns the number of bytes written. On any error nothing is left and the target is untouched. With
    ``sync_dir=False`` the caller fsyncs the folder itself (to share one fsync among several files) before it
    reports the file as stored. With ``replace=False`` an existing ``target`` is left as it is and
    :class:`FileExistsError` raised (nothing else is left either): the receive path learns that an instance is
    here already without looking first.

    The receive path's hot spot, so it costs what it must and no more. Where the filesystem has them (Linux:
    ext4, XFS, btrfs, tmpfs) the file is an anonymous ``O_TMPFILE`` in the target's folder, linked under its
    name once fsynced: one change to the folder instead of a create and a rename (concurrent writers into one
    series folder wait on its lock for each), and a crash leaves nothing to clean up. Elsewhere, or when the
    target exists already (it is replaced), a temporary name of this process and thread (no random name to
    try) is renamed into place. The folder is looked at only when the file cannot be made (then created with
    :func:`make_folder_durably`); the chunks go out in one ``writev``.
    """
    parts: list[bytes | memoryview] = [chunks] if isinstance(chunks, bytes) else list(chunks)
    fd, tmp = _open_new(target)
    try:
        try:
            size = _write_all(fd, parts)
            os.fsync(fd)
            if tmp is None:
                tmp = _link(fd, target, replace)
        finally:
            os.close(fd)
        if tmp is not None and replace:
            os.replace(tmp, target)
        elif tmp is not None:
            os.link(tmp, target)  # FileExistsError when it is there; the temporary name goes either way
            tmp.unlink()
        if sync_dir:
            fsync_dir(target.parent)
        return size
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


_TMP_PREFIX = ".incoming-"
_HOST_TOKEN = secrets.token_hex(4)  # with the pid: unique also among hosts sharing the folder
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_MODE = 0o600  # patient data: for the daemon's user only (as tempfile.mkstemp made them before)


class _Anonymous:
    flag = getattr(os, "O_TMPFILE", 0)  # 0: this platform or the storage's filesystem has none


_NOT_SUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # O_TMPFILE refused by the filesystem or kernel


def _open_new(target: Path) -> tuple[int, Path | None]:
    """A new file for ``target``'s content: an anonymous one (None), or a named temporary one (its path). Its
    folder is made, durably, when missing."""
    for _ in range(2):
        try:
            if _Anonymous.flag:
                return os.open(target.parent, _Anonymous.flag | os.O_WRONLY | os.O_CLOEXEC, _MODE), None
            tmp = _temporary_name(target)
            return _create(tmp), tmp
        except FileNotFoundError:
            make_folder_durably(target.parent)
        except OSError as exc:
            if exc.errno not in _NOT_SUPPORTED or not _Anonymous.flag:
                raise
            _Anonymous.flag = 0
    tmp = _temporary_name(target)
    return _create(tmp), tmp


def _link(fd: int, target: Path, replace: bool) -> Path | None:
    """Give the anonymous file ``fd`` the name ``target``; when that name exists, a temporary name instead
    (returned, for the caller to rename over it), or FileExistsError unless ``replace``."""
    source = f"/proc/self/fd/{fd}"
    try:  # src_dir_fd: only so that os.link runs linkat, which can follow the /proc link (the path is absolute)
        os.link(source, target, src_dir_fd=fd, follow_symlinks=True)
        return None
    except FileExistsError:
        if not replace:
            raise
        tmp = _temporary_name(target)
        tmp.unlink(missing_ok=True)
        os.link(source, tmp, src_dir_fd=fd, follow_symlinks=True)
        return tmp


def _temporary_name(target: Path) -> Path:
    return target.with_name(f"{_TMP_PREFIX}{target.name}.{os.getpid()}-{_HOST_TOKEN}.{threading.get_ident()}")


def _create(tmp: Path) -> int:
    """Open ``tmp`` as a new file; a stale one of that name (a crash's: the name is this thread's) is replaced."""
    try:
        return os.open(tmp, _CREATE, _MODE)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return os.open(tmp, _CREATE, _MODE)


def _write_all(fd: int, parts: list[bytes | memoryview]) -> int:
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    size = sum(len(view) for view in views)
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return size


_IOV_MAX = 1024


def copy_durably(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` with the same guarantees as :func:`write_bytes_durably`."""
    make_folder_durably(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return target.stat().st_size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` folder to ``target``, replacing an older one there."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def move_to_quarantine(source: Path, quarantine: Path, reason: str) -> Path:
    """Move a bad input aside (never delete it) with a text file saying why; return its new path."""
    quarantine.mkdir(parents=True, exist_ok=True)
    target = quarantine / source.name
    n = 1
    while target.exists():
        target = quarantine / f"{source.stem}.{n}{source.suffix}"
        n += 1
    shutil.move(str(source), target)
    target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target
