"""Folder intake: the daemon's inbox and scanner folders.

A file is taken once it has settled: size and modification time unchanged for ``settle_seconds``.

* ``<data_dir>/inbox`` is consumed: DICOM files are stored durably under ``storage/`` and then removed from
  the inbox; slides are moved to ``storage/slides/``; anything else is moved to quarantine with a reason.
* Scanner folders (``ingest.folders``, recursive) are read in place: slides become inputs where they lie,
  DICOM files are copied into storage, other files are ignored with one log line.

A slide already recorded with the same size and mtime is not taken again, across restarts; a rewritten one is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from agent.config import Settings
from agent.durable import copy_durably, fsync_dir, move_to_quarantine
from agent.errors import InputError
from agent.records import InputKind, Instance
from agent.store import Store
from dicom_node.storage import instance_path, routing_attrs

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide"})
_SKIP_SUFFIXES = (".reason.txt", ".partial")


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float
    taken: bool = False


class FolderWatcher:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settle = settings.ingest.settle_seconds
        self.paths = settings.paths
        self.folders: list[tuple[Path, bool]] = []  # (folder, consumed)
        if settings.ingest.inbox:
            self.folders.append((self.paths.inbox, True))
        self.folders += [(f.resolve(), False) for f in settings.ingest.folders]
        self._seen: dict[Path, _Seen] = {}
        self._warned: set[Path] = set()

    def scan(self, now: float | None = None) -> int:
        """Look at every file once; take the settled ones. Returns how many files were taken."""
        now = time.time() if now is None else now
        taken = 0
        present: set[Path] = set()
        for folder, consumed in self.folders:
            if not folder.is_dir():
                if folder not in self._warned:
                    log.error("watched folder %s does not exist or is not a folder", folder)
                    self._warned.add(folder)
                continue
            self._warned.discard(folder)
            for path in files_under(folder):
                present.add(path)
                if self._settled(path, now):
                    self._seen[path].taken = True
                    if self.take(path, consumed) is not None:
                        taken += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return taken

    def _settled(self, path: Path, now: float) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[path] = seen = _Seen(st.st_size, st.st_mtime_ns, now)
        return not seen.taken and now - seen.since >= self.settle

    def take(self, path: Path, consumed: bool) -> str | None:
        """Ingest one file; return the key of the input it belongs to, or None when it was not taken."""
        suffix = path.suffix.lower()
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
        if consumed:
            target = self.paths.storage / "slides" / path.name
            n = 1
            while target.exists():
                target = target.with_name(f"{path.stem}.{n}{path.suffix}")
                n += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            fsync_dir(target.parent)
            path = target
        st = path.stat()
        fingerprint = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]
        attrs = {"file_name": path.name, "suffix": path.suffix.lower(), "size": st.st_size}
        inp, new = self.store.upsert_file_input(InputKind.SLIDE, path, fingerprint, attrs)
        if new:
            log.info("slide %s recorded as input %d", path.name, inp.id)
        return inp.key

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


def files_under(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            yield Path(root) / name


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
