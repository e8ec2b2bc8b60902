"""Whole-slide images arriving in scanner folders and the inbox.

A slide must be complete before it is taken: every part of a multi-file slide present and settled (MIRAX
``.mrxs`` with its data folder, Hamamatsu ``.vms`` with its image files) and openslide able to open it. A slide
in a format openslide recognises that still cannot be opened is waited for a grace period (it may still be
being written); after that it is taken anyway, so that its job fails with a clear reason. A file openslide
does not recognise at all is taken when settled and fails likewise.

A slide already recorded with the same fingerprint (size and mtime of every part) is not taken again, across
restarts; a rewritten one is. From the inbox a slide (with its parts and sidecar) is moved to
``storage/slides/``; in a scanner folder it becomes an input where it lies. Context for a slide (accession,
patient) comes from named groups of ``ingest.filename_regex`` matched on its name or path, and from a JSON
sidecar ``<file name>.json`` or ``<stem>.json``; it is stored in the input's ``attrs["context"]`` and never
logged.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from agent.config import DataPaths
from agent.ingest.finished import Seen, fingerprint
from agent.ingest.knobs import IngestKnobs
from agent.records import InputKind
from agent.store import Store
from pipelines.durable import fsync_dir
from pipelines.wsi.slide_files import OpenCheck, mrxs_folder, open_check, sidecar_for, slide_context, slide_parts

log = logging.getLogger(__name__)


class SlideIntake:
    """Decides when a settled slide is complete, and records it as an input (moving it out of the inbox)."""

    def __init__(self, store: Store, paths: DataPaths) -> None:
        self.store = store
        self.paths = paths

    def complete(self, path: Path, seen: Seen, waited: float, knobs: IngestKnobs) -> bool:
        """All parts present, and openable or past the grace (``waited``: seconds since it settled)."""
        parts = slide_parts(path)
        if not parts.complete:
            if not seen.reported:
                log.info("slide %s waits for its parts: %s", path.name, ", ".join(parts.missing[:5]))
                seen.reported = True
            return False
        if not isinstance(seen.verdict, OpenCheck):
            seen.verdict, detail = open_check(path)
            if seen.verdict is OpenCheck.UNREADABLE:
                log.info("slide %s cannot be opened yet (%s); waiting up to %.0f s", path.name, detail,
                         knobs.unopenable_grace_s)
        return seen.verdict is not OpenCheck.UNREADABLE or waited >= knobs.unopenable_grace_s

    def take(self, path: Path, consumed: bool, knobs: IngestKnobs, relative: str) -> str:
        """Record the slide at ``path`` (``relative``: its path under the watched folder); return its input key."""
        parts = slide_parts(path)
        sidecar = sidecar_for(path)
        context, source = slide_context(path, knobs.filename_regex, sidecar if knobs.sidecar else None, relative)
        if consumed:
            path = self._move(path, parts.parts if parts.complete else (path,), sidecar)
            parts = slide_parts(path)
        stamp = fingerprint(parts.parts)
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
        inp, new = self.store.upsert_file_input(InputKind.SLIDE, path, stamp, attrs)
        if new:
            log.info("slide %s recorded as input %d", path.name, inp.id)
        return inp.key

    def _move(self, path: Path, parts: tuple[Path, ...], sidecar: Path | None) -> Path:
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
