"""The daemon's folder intake: the inbox and scanner folders, each finished file taken by what it is.

* ``<data_dir>/inbox`` is consumed: DICOM files are stored durably under ``storage/`` and then removed from
  the inbox; slides (with their parts and sidecar) are moved to ``storage/slides/``; anything else is moved
  to quarantine with a reason.
* Scanner folders (``ingest.folders``, recursive) are read in place: slides become inputs where they lie,
  DICOM files are copied into storage, other files are ignored with one log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.config import Settings
from agent.errors import InputError
from agent.ingest.dicom_files import DicomFileIntake, is_dicom
from agent.ingest.finished import FinishedFiles, Seen
from agent.ingest.knobs import IngestKnobs
from agent.ingest.slides import SlideIntake
from agent.store import Store
from pipelines.durable import move_to_quarantine
from pipelines.wsi.slide_files import SLIDE_SUFFIXES, owner_of

log = logging.getLogger(__name__)


class FolderWatcher(FinishedFiles):
    def __init__(self, store: Store, settings: Settings) -> None:
        ingest = settings.ingest
        self.paths = settings.paths
        folders = [(self.paths.inbox, True)] if ingest.inbox else []
        folders += [(f.resolve(), False) for f in ingest.folders]
        super().__init__(folders, IngestKnobs.from_settings(ingest), ingest.settle_seconds, ingest.scan_interval_s)
        self.store = store
        self.slides = SlideIntake(store, self.paths)
        self.dicom_files = DicomFileIntake(store, self.paths)

    def _complete(self, path: Path, seen: Seen, now: float) -> bool:
        if path.suffix.lower() not in SLIDE_SUFFIXES:
            return True
        return self.slides.complete(path, seen, now - seen.since - self.settle, self.knobs)

    def take(self, path: Path, consumed: bool) -> str | None:
        """Ingest one file; return the key of the input it belongs to, or None when it was not taken."""
        suffix = path.suffix.lower()
        owner = owner_of(path)
        if owner is not None and owner != path and owner.exists():
            log.debug("%s is part of slide %s", path.name, owner.name)
            return None
        try:
            if suffix in SLIDE_SUFFIXES:
                return self.slides.take(path, consumed, self.knobs, self._relative(path))
            if is_dicom(path):
                return self.dicom_files.take(path, consumed)
            raise InputError("neither DICOM nor a known slide format")
        except InputError as exc:
            if consumed:
                where = move_to_quarantine(path, self.paths.quarantine, f"{path.name}: {exc}")
                log.warning("quarantined %s: %s", where.name, exc)
            else:
                log.info("ignoring %s: %s", path, exc)
            return None
        except OSError as exc:
            self._retry_later(path)
            log.error("cannot take %s: %s", path, exc)
            return None

    def _relative(self, path: Path) -> str:
        for folder, _ in self.folders:
            if path.is_relative_to(folder):
                return path.relative_to(folder).as_posix()
        return path.name
