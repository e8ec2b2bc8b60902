"""Deep Zoom tiles and detection crops of a case's slide, read with openslide.

Slides stay open in a small LRU (``web.open_slides``): opening an SVS or a DICOM WSI reads its whole index, so a
viewer panning across one slide must not reopen it per tile. Tiles already made are kept in a byte-bounded LRU
(``web.tile_cache_mb``), so that the same tile asked for by two reviewers, or again after a zoom, costs nothing.
An openslide handle may be read from several threads at once (the C library is thread-safe and releases the
GIL), so tiles of one slide are made in parallel. A slide leaving the LRU is not closed while a request may be
reading it: dropping the last reference closes it (openslide-python closes a handle when it is collected).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

TILE_SIZE = 254
OVERLAP = 1
JPEG_QUALITY = 80


class TileError(Exception):
    """The slide cannot be read, or the tile asked for does not exist."""


@dataclass
class _Open:
    slide: openslide.AbstractSlide
    zoom: DeepZoomGenerator


def slide_file(path: Path) -> Path:
    """The file openslide opens for an input: the slide itself, or one instance of a DICOM WSI series folder."""
    if path.is_dir():
        for candidate in sorted(path.iterdir()):
            if candidate.is_file() and not candidate.name.startswith("."):
                return candidate
        raise TileError("the series folder holds no file")
    return path


class TileServer:
    def __init__(self, open_slides: int, cache_bytes: int) -> None:
        self._open_limit = open_slides
        self._cache_limit = cache_bytes
        self._slides: OrderedDict[Path, _Open] = OrderedDict()
        self._tiles: OrderedDict[tuple[Path, int, int, int], bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def _open(self, path: Path) -> _Open:
        with self._lock:
            found = self._slides.get(path)
            if found is not None:
                self._slides.move_to_end(path)
                return found
        try:
            slide = openslide.open_slide(str(slide_file(path)))
        except Exception as exc:  # openslide, or PIL for what openslide does not know (and whatever patches it)
            raise TileError(f"cannot open the slide: {exc.__class__.__name__}: {exc}") from exc
        opened = _Open(slide, DeepZoomGenerator(slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False))
        with self._lock:
            self._slides[path] = opened
            while len(self._slides) > self._open_limit:
                self._slides.popitem(last=False)  # closed once no request holds it
        return opened

    def dzi(self, path: Path) -> str:
        """The Deep Zoom descriptor (XML) of the slide."""
        return self._open(path).zoom.get_dzi("jpeg")

    def dimensions(self, path: Path) -> tuple[int, int]:
        width, height = self._open(path).slide.dimensions
        return int(width), int(height)

    def tile(self, path: Path, level: int, col: int, row: int) -> bytes:
        key = (path, level, col, row)
        with self._lock:
            cached = self._tiles.get(key)
            if cached is not None:
                self._tiles.move_to_end(key)
                return cached
        opened = self._open(path)
        if not 0 <= level < opened.zoom.level_count:
            raise TileError(f"no level {level}")
        cols, rows = opened.zoom.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileError(f"no tile {col}_{row} at level {level}")
        try:
            image = opened.zoom.get_tile(level, (col, row))
        except openslide.OpenSlideError as exc:
            raise TileError(f"cannot read the tile: {exc}") from exc
        data = _jpeg(image)
        self._keep(key, data)
        return data

    def crop(self, path: Path, box: tuple[float, float, float, float], size: int = 96, channel: int | None = None
             ) -> bytes:
        """A square JPEG of ``size`` pixels around a level-0 box (the box and a margin as wide as itself); with
        ``channel`` (0, 1, 2) that channel alone, in grey (a fluorescence slide's stains one by one)."""
        opened = self._open(path)
        x0, y0, x1, y1 = box
        side = max(8.0, 2.0 * max(x1 - x0, y1 - y0))
        left, top = int((x0 + x1 - side) / 2), int((y0 + y1 - side) / 2)
        try:
            region = opened.slide.read_region((left, top), 0, (int(side), int(side)))
        except openslide.OpenSlideError as exc:
            raise TileError(f"cannot read the region: {exc}") from exc
        image = region.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return _jpeg(image if channel is None else image.getchannel(channel).convert("RGB"))

    def close(self) -> None:
        """Forget the open slides and the tiles (each slide closes once no request reads it any more)."""
        with self._lock:
            self._slides.clear()
            self._tiles.clear()
            self._cached = 0

    def _keep(self, key: tuple[Path, int, int, int], data: bytes) -> None:
        if len(data) > self._cache_limit:
            return
        with self._lock:
            if key in self._tiles:
                return
            self._tiles[key] = data
            self._cached += len(data)
            while self._cached > self._cache_limit:
                _old, dropped = self._tiles.popitem(last=False)
                self._cached -= len(dropped)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    if image.mode != "RGB":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A") if "A" in image.getbands() else None)
        image = background
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
