"""Folder intake: the daemon's inbox and scanner folders.

* ``<data_dir>/inbox`` is consumed: DICOM files are stored durably under ``storage/`` and then removed from
  the inbox; slides (with their parts and sidecar) are moved to ``storage/slides/``; anything else is moved
  to quarantine with a reason.
* Scanner folders (``ingest.folders``, recursive) are read in place: slides become inputs where they lie,
  DICOM files are copied into storage, other files are ignored with one log line.

Noticing files. In ``events`` mode a watchdog observer (inotify) reports changed paths between scans and a
full walk runs at start-up (files already there and not yet processed are picked up) and every
``rescan_interval_s`` as a safety net; in ``polling`` mode, for network shares where change events do not
arrive, every scan walks the folders. ``auto`` polls folders on network file systems (NFS, SMB/CIFS, …).

Taking a file. A file is taken once it has settled: size and modification time unchanged for
``settle_seconds``. A slide must also be complete: every part of a multi-file slide present and settled
(MIRAX ``.mrxs`` with its data folder, Hamamatsu ``.vms`` with its image files) and openslide able to open
it. A slide in a format openslide recognises that still cannot be opened is waited for a grace period (it
may still be being written); after that it is taken anyway, so that its job fails with a clear reason. A
file openslide does not recognise at all is taken when settled and fails likewise.

A slide already recorded with the same fingerprint (size and mtime of every part) is not taken again, across
restarts; a rewritten one is. Context for a slide (accession, patient) comes from named groups of
``ingest.filename_regex`` matched on its name or path, and from a JSON sidecar ``<file name>.json`` or
``<stem>.json``; it is stored in the input's ``attrs["context"]`` and never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from agent.config import Settings
from agent.errors import InputError
from agent.records import InputKind, Instance
from agent.store import Store
from dicom_node.storage import instance_path, routing_attrs
from pipelines.durable import copy_durably, fsync_dir, move_to_quarantine
from pipelines.wsi.slide_files import (
    SLIDE_SUFFIXES,
    OpenCheck,
    mrxs_folder,
    open_check,
    owner_of,
    sidecar_for,
    slide_context,
    slide_parts,
)

log = logging.getLogger(__name__)

__all__ = ["SLIDE_SUFFIXES", "FolderWatcher", "files_under"]

_SKIP_SUFFIXES = (".reason.txt", ".partial")
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "fuse.sshfs", "9p", "ncpfs"})
ORPHAN_PART_S = 3600.0  # a part or sidecar whose slide never comes is treated as a file of its own after this


@dataclass
class _Seen:
    signature: str
    since: float
    taken: bool = False
    open_state: OpenCheck | None = None  # openslide's verdict for this signature, once checked
    reported: bool = False  # the reason for waiting was logged


@dataclass(frozen=True)
class _IngestKnobs:
    """The watcher's settings, resolved (defaults filled in, the regex compiled)."""

    watch_mode: str
    rescan_interval_s: float
    unopenable_grace_s: float
    filename_regex: re.Pattern[str] | None
    sidecar: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> _IngestKnobs:
        ingest = settings.ingest
        grace = ingest.unopenable_grace_s
        return cls(
            watch_mode=ingest.watch_mode,
            rescan_interval_s=ingest.rescan_interval_s,
            unopenable_grace_s=grace if grace is not None else max(3 * ingest.settle_seconds, 10.0),
            filename_regex=re.compile(ingest.filename_regex) if ingest.filename_regex else None,
            sidecar=ingest.sidecar,
        )


class FolderWatcher:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settle = settings.ingest.settle_seconds
        self.paths = settings.paths
        self.knobs = _IngestKnobs.from_settings(settings)
        self.folders: list[tuple[Path, bool]] = []  # (folder, consumed)
        if settings.ingest.inbox:
            self.folders.append((self.paths.inbox, True))
        self.folders += [(f.resolve(), False) for f in settings.ingest.folders]
        self._seen: dict[Path, _Seen] = {}
        self._warned: set[Path] = set()
        self._feed: _EventFeed | None = None
        self._next_full_scan = 0.0
        self._fstypes: dict[Path, str | None] = {}
        self.scan_interval = settings.ingest.scan_interval_s

    def close(self) -> None:
        """Stop the change-event observer (the daemon's watcher runs until the process ends)."""
        if self._feed is not None:
            self._feed.stop()
            self._feed = None

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
            self._feed = _EventFeed.start()
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
        """Settled (and, for a slide, complete and openable or past its grace); logs why it waits, once."""
        signature = _signature(path)
        if signature is None:
            self._seen.pop(path, None)
            return False
        seen = self._seen.get(path)
        if seen is None or seen.signature != signature:
            seen = self._seen[path] = _Seen(signature, now)
        if seen.taken or now - seen.since < self.settle:
            return False
        if path.suffix.lower() not in SLIDE_SUFFIXES:
            return True
        parts = slide_parts(path)
        if not parts.complete:
            if not seen.reported:
                log.info("slide %s waits for its parts: %s", path.name, ", ".join(parts.missing[:5]))
                seen.reported = True
            return False
        if seen.open_state is None:
            seen.open_state, detail = open_check(path)
            if seen.open_state is OpenCheck.UNREADABLE:
                log.info("slide %s cannot be opened yet (%s); waiting up to %.0f s", path.name, detail,
                         self.knobs.unopenable_grace_s)
        waited = now - seen.since - self.settle
        return seen.open_state is not OpenCheck.UNREADABLE or waited >= self.knobs.unopenable_grace_s

    def _take_unit(self, path: Path, consumed: bool) -> str | None:
        self._seen[path].taken = True
        key = self.take(path, consumed)
        if key is None and path in self._seen and not path.exists():
            del self._seen[path]
        return key

    # ------------------------------------------------------------------------------------ taking

    def take(self, path: Path, consumed: bool) -> str | None:
        """Ingest one file; return the key of the input it belongs to, or None when it was not taken."""
        suffix = path.suffix.lower()
        owner = owner_of(path)
        if owner is not None and owner != path and owner.exists():
            log.debug("%s is part of slide %s", path.name, owner.name)
            return None
        try:
            if suffix in SLIDE_SUFFIXES:
                return self._take_slide(path, consumed)
            if _is_dicom(path):
                return self._take_dicom(path, consumed)
            raise InputError("neither DICOM nor a known slide format")
        except InputError as exc:
            if consumed:
                where = move_to_quarantine(path, self.paths.quarantine, f"{path.name}: {exc}")
                log.warning("quarantined %s: %s", where.name, exc)
            else:
                log.info("ignoring %s: %s", path, exc)
            return None
        except OSError as exc:
            if path in self._seen:
                self._seen[path].taken = False  # try again on the next scan
            log.error("cannot take %s: %s", path, exc)
            return None

    def _take_slide(self, path: Path, consumed: bool) -> str:
        parts = slide_parts(path)
        sidecar = sidecar_for(path)
        context, source = slide_context(path, self.knobs.filename_regex, sidecar if self.knobs.sidecar else None,
                                        self._relative(path))
        if consumed:
            path = self._move_slide(path, parts.parts if parts.complete else (path,), sidecar)
            parts = slide_parts(path)
        fingerprint = _fingerprint(parts.parts)
        attrs: dict[str, Any] = {
            "file_name": path.name,
            "suffix": path.suffix.lower(),
            "size": sum(p.stat().st_size for p in parts.parts if p.is_file()),
        }
        if len(parts.parts) > 1:
            attrs["parts"] = len(parts.parts)
        if context:
            attrs["context"] = context
            attrs["context_source"] = source
        inp, new = self.store.upsert_file_input(InputKind.SLIDE, path, fingerprint, attrs)
        if new:
            log.info("slide %s recorded as input %d", path.name, inp.id)
        return inp.key

    def _move_slide(self, path: Path, parts: tuple[Path, ...], sidecar: Path | None) -> Path:
        slides = self.paths.storage / "slides"
        if len(parts) == 1:
            target = slides / path.name
            n = 1
            while target.exists():
                target = target.with_name(f"{path.stem}.{n}{path.suffix}")
                n += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            if sidecar is not None:
                shutil.move(str(sidecar), target.with_name(target.name + ".json"))
            fsync_dir(target.parent)
            return target
        # a multi-file slide gets a folder of its own, its parts keeping their places relative to the main file
        folder = slides / path.stem
        n = 1
        while folder.exists():
            folder = slides / f"{path.stem}.{n}"
            n += 1
        folder.mkdir(parents=True)
        for part in [*parts, *([sidecar] if sidecar else [])]:
            relative = part.relative_to(path.parent)
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(part), folder / relative)
        data_dir = mrxs_folder(path)
        if data_dir.is_dir() and not any(data_dir.iterdir()):
            data_dir.rmdir()
        fsync_dir(folder)
        return folder / path.name

    def _relative(self, path: Path) -> str:
        for folder, _ in self.folders:
            if path.is_relative_to(folder):
                return path.relative_to(folder).as_posix()
        return path.name

    def _take_dicom(self, path: Path, consumed: bool) -> str:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise InputError(f"unreadable DICOM ({exc})") from exc
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        target = instance_path(
            self.paths.storage, ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
        )
        size = copy_durably(path, target)
        inst = Instance(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=sop_class,
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            path=target,
            size=size,
            attrs=routing_attrs(ds),
            source="inbox" if consumed else f"folder:{path.parent}",
        )
        new = self.store.add_instance(inst)
        if consumed:
            path.unlink()
        log.debug("instance %s stored (%s)", inst.sop_instance_uid, "new" if new else "duplicate")
        return inst.series_uid


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
    return _fingerprint(slide_parts(path).parts)


def _fingerprint(parts: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        try:
            st = part.stat()
        except OSError:
            digest.update(f"{part.name}:absent;".encode())
            continue
        digest.update(f"{part.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:32]


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


class _EventFeed:
    """Paths reported changed by a watchdog observer since the last drain (thread-safe)."""

    MAX_PENDING = 100_000

    def __init__(self, observer: Any) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._changed: set[Path] = set()
        self._overflow = False
        self._watched: set[Path] = set()

    @classmethod
    def start(cls) -> _EventFeed | None:
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


def _is_dicom(path: Path) -> bool:
    """DICOM Part 10 (preamble + DICM) or, leniently, a file pydicom can parse without the preamble."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    try:
        pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID  # noqa: B018
    except (InvalidDicomError, ValueError, EOFError, OSError, AttributeError, KeyError, TypeError, struct.error):
        return False
    return True
