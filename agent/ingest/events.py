"""Change events from the file system: a watchdog observer (inotify on Linux), and which mounts cannot
deliver them (network file systems, polled instead)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "fuse.sshfs", "9p", "ncpfs"})


def filesystem_type(folder: Path) -> str | None:
    """The file system type of the mount holding ``folder`` (Linux /proc/mounts), or None."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best, fstype = "", None
    target = str(folder.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            mount = fields[1].replace("\\040", " ")
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, fstype = mount, fields[2]
    return fstype


class EventFeed:
    """Paths reported changed by a watchdog observer since the last drain (thread-safe)."""

    MAX_PENDING = 100_000

    def __init__(self, observer: Any) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._changed: set[Path] = set()
        self._overflow = False
        self._watched: set[Path] = set()

    @classmethod
    def start(cls) -> EventFeed | None:
        try:
            from watchdog.observers import Observer
        except ImportError as exc:
            log.warning("watchdog is not available (%s); polling instead", exc)
            return None
        observer = Observer()
        observer.daemon = True
        feed = cls(observer)
        try:
            observer.start()
        except OSError as exc:
            log.warning("cannot start the file-change observer (%s); polling instead", exc)
            return None
        return feed

    def watch(self, folder: Path) -> bool:
        """Watch ``folder`` recursively; True when it was not watched before."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        if folder in self._watched:
            return False
        feed = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                feed._note(event.src_path)
                if getattr(event, "dest_path", ""):
                    feed._note(event.dest_path)

        try:
            self._observer.schedule(Handler(), str(folder), recursive=True)
        except OSError as exc:
            log.warning("cannot watch %s for changes (%s); it is only walked periodically", folder, exc)
            return False
        self._watched.add(folder)
        return True

    def _note(self, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        with self._lock:
            if len(self._changed) >= self.MAX_PENDING:
                self._overflow = True
                self._changed.clear()
            else:
                self._changed.add(path)

    def drain(self) -> set[Path]:
        with self._lock:
            changed, self._changed = self._changed, set()
            return changed

    def overflowed(self) -> bool:
        with self._lock:
            was, self._overflow = self._overflow, False
            return was

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
