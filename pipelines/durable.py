"""Durable file operations: nothing is reported stored before it is on disk under its final name.

Shared by every room that writes files it must not lose (received instances, result folders, quarantine).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(target: Path, chunks: list[bytes] | bytes, *, sync_dir: bool = True) -> int:
    """Write to a temporary file beside ``target``, fsync it, rename it into place, fsync the folder.

    Returns the number of bytes written. On any error the temporary file is removed and the target is untouched.
    With ``sync_dir=False`` the caller fsyncs the folder itself (to share one fsync among several files)
    before it reports the file as stored.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = [chunks] if isinstance(chunks, bytes) else chunks
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
                size += len(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        if sync_dir:
            fsync_dir(target.parent)
        return size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_durably(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` with the same guarantees as :func:`write_bytes_durably`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
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
