"""Which files make up a slide, whether all of them are there, and whether openslide can open it yet.

Most formats are one file. Two are several:

* MIRAX ``slide.mrxs`` with a folder ``slide/`` beside it holding ``Slidedat.ini`` and the ``Data*.dat``
  files that ``Slidedat.ini`` lists under ``[DATAFILE]``;
* Hamamatsu VMS ``slide.vms``, an index naming JPEG image files, a map file and an optimisation file that lie
  in the same folder.

A sidecar ``<slide file name>.json`` (``S1.svs.json``) or ``<stem>.json`` beside a slide carries its
context (accession, patient) and travels with it.
"""

from __future__ import annotations

import configparser
import json
import logging
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import openslide

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide"})
_MRXS_PART = re.compile(r"^(Slidedat\.ini|Index\.dat|Data\d+\.dat)$", re.IGNORECASE)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF, both byte orders
_VMS_KEYS = re.compile(r"^(ImageFile(\(\d+,\d+\))?|MapFile|OptimisationFile|MacroImage)$", re.IGNORECASE)


@dataclass(frozen=True)
class SlideParts:
    main: Path
    parts: tuple[Path, ...]  # every file of the slide, the main file first
    missing: tuple[str, ...]  # files the slide names that are not there (yet)

    @property
    def complete(self) -> bool:
        return not self.missing


def mrxs_folder(main: Path) -> Path:
    return main.with_suffix("")


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig", errors="replace"))
    except (configparser.Error, OSError) as exc:
        log.debug("cannot read %s yet: %s", path, exc)
        return None
    return parser


def _mrxs_parts(main: Path) -> SlideParts:
    folder = mrxs_folder(main)
    index = folder / "Slidedat.ini"
    if not index.is_file():
        return SlideParts(main, (main,), (f"{folder.name}/Slidedat.ini",))
    ini = _read_ini(index)
    if ini is None or not ini.has_section("DATAFILE"):
        return SlideParts(main, (main, index), (f"{folder.name}/Slidedat.ini [DATAFILE]",))
    try:
        count = int(ini.get("DATAFILE", "FILE_COUNT"))
    except (configparser.Error, ValueError):
        return SlideParts(main, (main, index), (f"{folder.name}/Slidedat.ini FILE_COUNT",))
    names = [ini.get("DATAFILE", f"FILE_{i}", fallback="") for i in range(count)]
    parts = [main, index] + [folder / n for n in names if n]
    missing = [f"{folder.name}/{n or f'FILE_{i}'}" for i, n in enumerate(names) if not n or not (folder / n).is_file()]
    return SlideParts(main, tuple(parts), tuple(missing))


def _vms_names(main: Path) -> list[str]:
    names: list[str] = []
    try:
        text = main.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return names
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and _VMS_KEYS.match(key.strip()) and value.strip():
            names.append(value.strip())
    return names


def _vms_parts(main: Path) -> SlideParts:
    names = _vms_names(main)
    if not names:
        return SlideParts(main, (main,), ("ImageFile entries",))
    parts = [main] + [main.parent / n for n in names]
    missing = [n for n in names if not (main.parent / n).is_file()]
    return SlideParts(main, tuple(parts), tuple(missing))


def slide_parts(main: Path) -> SlideParts:
    suffix = main.suffix.lower()
    if suffix == ".mrxs":
        return _mrxs_parts(main)
    if suffix == ".vms":
        return _vms_parts(main)
    return SlideParts(main, (main,), ())


def sidecar_for(slide: Path) -> Path | None:
    for candidate in (slide.with_name(slide.name + ".json"), slide.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


CONTEXT_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_CONTEXT_KEYS = 50


def slide_context(path: Path, regex: re.Pattern[str] | None, sidecar: Path | None,
                  relative_name: str | None = None) -> tuple[dict[str, Any], str | None]:
    """A slide's context (accession, patient…) and where it came from (``filename``, ``sidecar`` or both):
    named groups of ``regex`` matched on the file name (or ``relative_name``, its path under the watched
    folder), then the scalar values of its JSON ``sidecar`` (see :func:`sidecar_for`; None to read none).
    Unreadable sidecars are logged and ignored."""
    context: dict[str, Any] = {}
    sources = []
    if regex is not None:
        match = regex.search(path.name) or (regex.search(relative_name) if relative_name else None)
        if match:
            context.update({k: v for k, v in match.groupdict().items() if v is not None})
            sources.append("filename")
    if sidecar is not None:
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("sidecar %s of %s is not readable JSON (%s); ignored", sidecar.name, path.name, exc)
            doc = None
        if isinstance(doc, dict):
            values = {k: v for k, v in doc.items()
                      if CONTEXT_KEY.match(str(k)) and isinstance(v, str | int | float | bool)}
            context.update(dict(list(values.items())[:MAX_CONTEXT_KEYS]))
            sources.append("sidecar")
        elif doc is not None:
            log.warning("sidecar %s of %s is not a JSON object; ignored", sidecar.name, path.name)
    return context, "+".join(sources) or None


def owner_of(path: Path) -> Path | None:
    """The main file of the slide that ``path`` belongs to as a part or sidecar, or None."""
    name = path.name
    lower = name.lower()
    if lower.endswith(".json"):
        stem = name[: -len(".json")]
        if Path(stem).suffix.lower() in SLIDE_SUFFIXES:
            return path.with_name(stem)  # S1.svs.json belongs to S1.svs, present or not yet
        for suffix in SLIDE_SUFFIXES:
            for candidate in (path.with_name(stem + suffix), path.with_name(stem + suffix.upper())):
                if candidate.is_file():
                    return candidate
        return None
    folder = path.parent
    for suffix in (".mrxs", ".MRXS"):
        main = folder.parent / (folder.name + suffix)
        if main.is_file():
            return main
    if _MRXS_PART.match(name):
        return folder.parent / (folder.name + ".mrxs")  # its index file is not there yet
    if path.suffix.lower() not in SLIDE_SUFFIXES:
        for vms in [*folder.glob("*.vms"), *folder.glob("*.VMS")]:
            if name in _vms_names(vms):
                return vms
    return None


class OpenCheck(Enum):
    OPENS = "opens"
    NOT_A_SLIDE = "not a slide format openslide recognises"
    UNREADABLE = "recognised but cannot be opened (still being written, or corrupt)"


def looks_like_tiff(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) in TIFF_MAGIC
    except OSError:
        return False


def open_check(main: Path) -> tuple[OpenCheck, str]:
    """Whether openslide opens ``main`` now. A file that looks like a slide container (TIFF header, or a
    multi-file index) but does not open may still be being written; anything else is not a slide."""
    try:
        with openslide.OpenSlide(str(main)) as slide:
            _ = slide.dimensions
            return OpenCheck.OPENS, openslide.OpenSlide.detect_format(str(main)) or "slide"
    except (openslide.OpenSlideError, OSError) as exc:
        failure = str(exc) or type(exc).__name__
    try:
        with main.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return OpenCheck.NOT_A_SLIDE, str(exc)
    if head in TIFF_MAGIC or main.suffix.lower() in (".mrxs", ".vms"):
        return OpenCheck.UNREADABLE, failure
    return OpenCheck.NOT_A_SLIDE, failure
