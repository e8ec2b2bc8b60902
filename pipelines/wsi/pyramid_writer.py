"""Writing pyramidal tiled TIFF files with JPEG tiles, the layout openslide reads as ``generic-tiff``.

tifffile cannot write JPEG tiles without the optional imagecodecs package, so this module writes the TIFF
structure itself: each pyramid level is one tiled IFD (largest first), its tiles complete JFIF streams in
YCbCr with 4:2:0 subsampling as OpenCV encodes them. Tiles are streamed to the file as they come; only the
offsets stay in memory, so any image size is written in bounded memory. Lower levels are built from the
level above by reading its tiles back (2×2 tiles → one), the way scanners build their pyramids.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import cv2
import numpy as np

# TIFF tag numbers and field types (TIFF 6.0 and BigTIFF).
_NEW_SUBFILE_TYPE, _IMAGE_WIDTH, _IMAGE_LENGTH, _BITS_PER_SAMPLE, _COMPRESSION = 254, 256, 257, 258, 259
_PHOTOMETRIC, _IMAGE_DESCRIPTION, _SAMPLES_PER_PIXEL, _X_RESOLUTION, _Y_RESOLUTION = 262, 270, 277, 282, 283
_PLANAR_CONFIG, _RESOLUTION_UNIT, _SOFTWARE, _TILE_WIDTH, _TILE_LENGTH = 284, 296, 305, 322, 323
_TILE_OFFSETS, _TILE_BYTE_COUNTS, _YCBCR_SUBSAMPLING, _REFERENCE_BLACK_WHITE = 324, 325, 530, 532
_ASCII, _SHORT, _LONG, _RATIONAL, _LONG8 = 2, 3, 4, 5, 16
_COMPRESSION_JPEG, _PHOTOMETRIC_YCBCR, _RESUNIT_CM = 7, 6, 3


@dataclass
class LevelRecord:
    """Where one written level's tiles are in the file."""

    width: int
    height: int
    tile: int
    offsets: list[int] = field(default_factory=list)
    byte_counts: list[int] = field(default_factory=list)

    @property
    def tiles_across(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def tiles_down(self) -> int:
        return math.ceil(self.height / self.tile)


def encode_jpeg_rgb(tile_rgb: np.ndarray, quality: int) -> bytes:
    """One RGB uint8 tile as a JFIF stream (YCbCr 4:2:0), as stored in a JPEG-compressed TIFF tile."""
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(tile_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer.tobytes())


def decode_jpeg_rgb(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("JPEG decoding failed")
    rgb: np.ndarray = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return rgb


class PyramidTiffWriter:
    """Write levels one after another; each ``write_level`` call appends tiles, then the level's IFD."""

    def __init__(self, path: Path, *, bigtiff: bool, mpp_um: float, jpeg_quality: int = 90) -> None:
        self.path = path
        self.bigtiff = bigtiff
        self.mpp_um = mpp_um
        self.jpeg_quality = jpeg_quality
        self.levels: list[LevelRecord] = []
        self._file: BinaryIO = path.open("w+b")
        self._next_ifd_pointer = self._write_header()

    def __enter__(self) -> PyramidTiffWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    # ------------------------------------------------------------------------------------ levels

    def write_level(
        self,
        width: int,
        height: int,
        tile: int,
        tiles: Iterable[np.ndarray],
        *,
        downsample: int,
        description: str | None = None,
    ) -> LevelRecord:
        """Write one level from RGB tiles in row-major order (edge tiles full-size, padded)."""
        record = LevelRecord(width, height, tile)
        expected = record.tiles_across * record.tiles_down
        for tile_rgb in tiles:
            data = encode_jpeg_rgb(tile_rgb, self.jpeg_quality)
            record.offsets.append(self._append(data))
            record.byte_counts.append(len(data))
        if len(record.offsets) != expected:
            raise ValueError(f"level {width}x{height}: got {len(record.offsets)} tiles, expected {expected}")
        self._write_ifd(record, downsample, description)
        self.levels.append(record)
        return record

    def downsampled_tiles(self, source: LevelRecord) -> Iterator[np.ndarray]:
        """Tiles of the level below ``source`` (half its size): each from 2×2 of its tiles, area-averaged."""
        t = source.tile
        across, down = math.ceil(source.width / 2 / t), math.ceil(source.height / 2 / t)
        for ty in range(down):
            for tx in range(across):
                block = np.empty((2 * t, 2 * t, 3), np.uint8)
                for dy in range(2):
                    for dx in range(2):
                        sx, sy = 2 * tx + dx, 2 * ty + dy
                        part = (
                            self.read_tile(source, sx, sy)
                            if sx < source.tiles_across and sy < source.tiles_down
                            else None
                        )
                        target = block[dy * t : (dy + 1) * t, dx * t : (dx + 1) * t]
                        if part is None:
                            target[:] = block[0, 0]  # beyond the image: repeat a known pixel
                        else:
                            target[:] = part
                yield cv2.resize(block, (t, t), interpolation=cv2.INTER_AREA)

    def read_tile(self, level: LevelRecord, tx: int, ty: int) -> np.ndarray:
        index = ty * level.tiles_across + tx
        self._file.seek(level.offsets[index])
        data = self._file.read(level.byte_counts[index])
        self._file.seek(0, 2)
        return decode_jpeg_rgb(data)

    # ------------------------------------------------------------------------------------ TIFF structure

    def _write_header(self) -> int:
        if self.bigtiff:
            self._file.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))
            return 8
        self._file.write(b"II" + struct.pack("<HI", 42, 0))
        return 4

    def _append(self, data: bytes) -> int:
        offset = self._file.seek(0, 2)
        if offset % 2:
            self._file.write(b"\0")
            offset += 1
        self._file.write(data)
        return offset

    def _write_ifd(self, record: LevelRecord, downsample: int, description: str | None) -> None:
        resolution = Fraction(1e4 / (self.mpp_um * downsample)).limit_denominator(1_000_000)
        offsets_type = _LONG8 if self.bigtiff else _LONG
        if not self.bigtiff and record.offsets and record.offsets[-1] + record.byte_counts[-1] >= 2**32:
            raise ValueError("classic TIFF cannot address more than 4 GiB; write a BigTIFF")
        entries: list[tuple[int, int, list[int] | bytes]] = [
            (_NEW_SUBFILE_TYPE, _LONG, [0 if downsample == 1 else 1]),
            (_IMAGE_WIDTH, _LONG, [record.width]),
            (_IMAGE_LENGTH, _LONG, [record.height]),
            (_BITS_PER_SAMPLE, _SHORT, [8, 8, 8]),
            (_COMPRESSION, _SHORT, [_COMPRESSION_JPEG]),
            (_PHOTOMETRIC, _SHORT, [_PHOTOMETRIC_YCBCR]),
        ]
        if description:
            entries.append((_IMAGE_DESCRIPTION, _ASCII, description.encode("ascii") + b"\0"))
        entries += [
            (_SAMPLES_PER_PIXEL, _SHORT, [3]),
            (_X_RESOLUTION, _RATIONAL, [resolution.numerator, resolution.denominator]),
            (_Y_RESOLUTION, _RATIONAL, [resolution.numerator, resolution.denominator]),
            (_PLANAR_CONFIG, _SHORT, [1]),
            (_RESOLUTION_UNIT, _SHORT, [_RESUNIT_CM]),
            (_SOFTWARE, _ASCII, b"OncoAgent synthetic slide generator\0"),
            (_TILE_WIDTH, _SHORT, [record.tile]),
            (_TILE_LENGTH, _SHORT, [record.tile]),
            (_TILE_OFFSETS, offsets_type, record.offsets),
            (_TILE_BYTE_COUNTS, _LONG, record.byte_counts),
            (_YCBCR_SUBSAMPLING, _SHORT, [2, 2]),
            (_REFERENCE_BLACK_WHITE, _RATIONAL, [0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1]),
        ]
        inline = 8 if self.bigtiff else 4
        count_fmt, entry_fmt, next_fmt = ("<Q", "<HHQ", "<Q") if self.bigtiff else ("<H", "<HHI", "<I")
        # values too large for the entry are written first, then the IFD that points at them
        packed: list[tuple[int, int, int, bytes]] = []
        for tag, kind, values in entries:
            data, count = _pack(kind, values)
            packed.append((tag, kind, count, data))
        value_offsets: dict[int, int] = {}
        for tag, _kind, _count, data in packed:
            if len(data) > inline:
                value_offsets[tag] = self._append(data)
        ifd_offset = self._append(b"")
        out = bytearray(struct.pack(count_fmt, len(packed)))
        for tag, kind, count, data in packed:
            out += struct.pack(entry_fmt, tag, kind, count)
            out += struct.pack("<Q" if self.bigtiff else "<I", value_offsets[tag]) if tag in value_offsets else (
                data.ljust(inline, b"\0")
            )
        out += struct.pack(next_fmt, 0)
        self._file.write(bytes(out))
        self._file.seek(self._next_ifd_pointer)
        self._file.write(struct.pack(next_fmt, ifd_offset))
        self._next_ifd_pointer = ifd_offset + len(out) - (8 if self.bigtiff else 4)
        self._file.seek(0, 2)


def _pack(kind: int, values: list[int] | bytes) -> tuple[bytes, int]:
    if isinstance(values, bytes):
        return values, len(values)
    fmt = {_SHORT: "H", _LONG: "I", _RATIONAL: "I", _LONG8: "Q"}[kind]
    count = len(values) // 2 if kind == _RATIONAL else len(values)
    return struct.pack(f"<{len(values)}{fmt}", *values), count

