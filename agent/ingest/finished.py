"""The shared "file finished" detector under every kind of folder intake.

Noticing files. In ``events`` mode a watchdog observer (inotify) reports changed paths between scans and a
full walk runs at start-up (files already there and not yet processed are picked up) and every
``rescan_interval_s`` as a safety net; in ``polling`` mode, for network shares where change events do not
arrive, every scan walks the folders. ``auto`` polls folders on network file systems (NFS, SMB/CIFS, …).

Finished. A unit is a file, or a multi-file slide as a whole (its parts and sidecar stand for the main file,
as :mod:`pipelines.wsi.slide_files` groups them). It has finished arriving once it has settled: size and
modification time (of every part) unchanged for ``settle_seconds``, and the kind's own check agrees
(:meth:`FinishedFiles._complete`). Each unit is taken once per signature; what taking does is the subclass's
(:meth:`FinishedFiles.take`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from agent.ingest.events import NETWORK_FILESYSTEMS, EventFeed, filesystem_type
from agent.ingest.knobs import IngestKnobs
from pipelines.wsi.slide_files import owner_of, slide_parts

log = logging.getLogger(__name__)

_SKIP_SUFFIXES = (".reason.txt", ".partial")
ORPHAN_PART_S = 3600.0  # a part or sidecar whose slide never comes is treated as a file of its own after this


@dataclass
class Seen:
    """What the detector knows of one unit, for its current signature."""

    signature: str
    since: float
    taken: bool = False
    verdict: object = None  # what the kind's own completeness check concluded for this signature, once checked
    reported: bool = False  # the reason for waiting was logged


class FinishedFiles:
    """Watched folders (``consumed`` ones are emptied by taking), and which of their units have finished."""

    def __init__(self, folders: list[tuple[Path, bool]], knobs: IngestKnobs, settle_s: float,
                 scan_interval_s: float) -> None:
        self.folders = folders  # (folder, consumed)
        self.knobs = knobs
        self.settle = settle_s
        self.scan_interval = scan_interval_s
        self._seen: dict[Path, Seen] = {}
        self._warned: set[Path] = set()
        self._feed: EventFeed | None = None
        self._next_full_scan = 0.0
        self._fstypes: dict[Path, str | None] = {}

    def close(self) -> None:
        """Stop the change-event observer (the daemon's watcher runs until the process ends)."""
        if self._feed is not None:
            self._feed.stop()
            self._feed = None

    # ------------------------------------------------------------------------------ what a kind decides

    def _complete(self, path: Path, seen: Seen, now: float) -> bool:
        """Whether a settled unit may be taken; a kind with more to wait for (a slide's parts) says no."""
        return True

    def take(self, path: Path, consumed: bool) -> str | None:
        """Ingest one file; return the key of the input it belongs to, or None when it was not taken."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ scanning

    def scan(self, now: float | None = None) -> int:
        """Look at new or unsettled files; take the settled ones. Returns how many inputs were taken."""
        now = time.time() if now is None else now
        folders = self._present_folders()
        self._watch(folders)
        full = self._feed is None or now >= self._next_full_scan or self._feed.overflowed()
        if full:
            self._next_full_scan = now + self.knobs.rescan_interval_s
            candidates = {p: c for folder, c in folders for p in _units(files_under(folder))}
            for gone in set(self._seen) - set(candidates):
                del self._seen[gone]
        else:
            assert self._feed is not None
            changed = self._feed.drain()
            candidates = {}
            for folder, consumed in folders:
                inside = [p for p in changed if p.is_relative_to(folder)]
                for path in _units(_expand(inside)):
                    candidates[path] = consumed
                for path in self._seen:
                    if not self._seen[path].taken and path.is_relative_to(folder):
                        candidates[path] = consumed
        taken = 0
        for path, consumed in sorted(candidates.items()):
            if self._ready(path, now) and self._take_unit(path, consumed) is not None:
                taken += 1
        return taken

    def _present_folders(self) -> list[tuple[Path, bool]]:
        present = []
        for folder, consumed in self.folders:
            if not folder.is_dir():
                if folder not in self._warned:
                    log.error("watched folder %s does not exist or is not a folder", folder)
                    self._warned.add(folder)
                continue
            if folder in self._warned:
                self._warned.discard(folder)
                self._next_full_scan = 0.0  # a share came back: walk it
            present.append((folder, consumed))
        return present

    def _watch(self, folders: list[tuple[Path, bool]]) -> None:
        event_folders = [f for f, _ in folders if self._wants_events(f)]
        if not event_folders:
            return
        if self._feed is None:
            self._feed = EventFeed.start()
            if self._feed is None:
                self.knobs = replace(self.knobs, watch_mode="polling")
                return
        for folder in event_folders:
            if self._feed.watch(folder):
                self._next_full_scan = 0.0  # newly watched: walk it once for what is already there

    def _wants_events(self, folder: Path) -> bool:
        mode = self.knobs.watch_mode
        if mode == "polling":
            return False
        if mode == "events":
            return True
        if folder not in self._fstypes:
            self._fstypes[folder] = fstype = filesystem_type(folder)
            if fstype in NETWORK_FILESYSTEMS:
                log.info("%s is on %s: polling it every %g s", folder, fstype, self.scan_interval)
        return self._fstypes[folder] not in NETWORK_FILESYSTEMS

    def _ready(self, path: Path, now: float) -> bool:
        """Settled and complete by its kind's check; the kind logs why it waits, once."""
        signature = _signature(path)
        if signature is None:
            self._seen.pop(path, None)
            return False
        seen = self._seen.get(path)
        if seen is None or seen.signature != signature:
            seen = self._seen[path] = Seen(signature, now)
        if seen.taken or now - seen.since < self.settle:
            return False
        return self._complete(path, seen, now)

    def _take_unit(self, path: Path, consumed: bool) -> str | None:
        self._seen[path].taken = True
        key = self.take(path, consumed)
        if key is None and path in self._seen and not path.exists():
            del self._seen[path]
        return key

    def _retry_later(self, path: Path) -> None:
        """Look at ``path`` again on the next scan (taking it failed for a reason that may pass)."""
        if path in self._seen:
            self._seen[path].taken = False


# ---------------------------------------------------------------------------------------------- helpers


def files_under(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            yield Path(root) / name


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Changed paths as files: a changed folder stands for the files under it."""
    for path in paths:
        if path.is_dir():
            yield from files_under(path)
        elif path.exists() and not path.name.startswith(".") and not path.name.endswith(_SKIP_SUFFIXES):
            yield path


def _units(paths: Iterable[Path]) -> Iterator[Path]:
    """Files to consider, with the parts and sidecars of a slide replaced by its main file.

    A part whose slide is not there yet is kept back until ORPHAN_PART_S has passed since it last changed;
    then it is a file of its own (quarantined from the inbox, ignored elsewhere).
    """
    seen: set[Path] = set()
    for path in paths:
        owner = owner_of(path)
        if owner is None:
            unit = path
        elif owner.exists():
            unit = owner
        else:
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if age < ORPHAN_PART_S:
                continue
            unit = path
        if unit not in seen:
            seen.add(unit)
            yield unit


def _signature(path: Path) -> str | None:
    """Size and mtime of the file, or of every part of a multi-file slide; None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    if path.suffix.lower() not in (".mrxs", ".vms"):
        return f"{st.st_size}:{st.st_mtime_ns}"
    return fingerprint(slide_parts(path).parts)


def fingerprint(parts: Iterable[Path]) -> str:
    """A digest of the name, size and mtime of each part (an absent part counts as absent)."""
    digest = hashlib.sha256()
    for part in parts:
        try:
            st = part.stat()
        except OSError:
            digest.update(f"{part.name}:absent;".encode())
            continue
        digest.update(f"{part.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:32]
