"""Opening a whole-slide image with openslide and reading it at a resolution given in µm per pixel.

openslide reads SVS, generic tiled TIFF, NDPI, MRXS, SCN, BIF, VMS and DICOM WSI (for a DICOM series the
instance files lie in one folder and openslide opens the series from any one of them). Every library error
becomes an :class:`~pipelines.errors.InputError` here, in one place, with the file name and a plain reason.

Coordinates: ``l0_*`` are level-0 pixels, ``lv_*`` pixels of a pyramid level. A region is asked for by its
level-0 origin and its size in output pixels at the processing resolution; the reader picks the coarsest
level that is still at least as fine as asked and resamples from there, so a whole level 0 is never decoded.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import openslide

from pipelines.errors import InputError
from pipelines.wsi.resolution import declared_mpp, is_plausible
from pipelines.wsi.slide_files import looks_like_tiff

log = logging.getLogger(__name__)

LEVEL_TOLERANCE = 1.02  # a level up to 2 % coarser than asked still counts as fine enough
NO_RESAMPLE_TOLERANCE = 0.005  # within 0.5 % of the asked size a region is used without resampling
READ_CHUNK_LV = 2048  # overview reads go through chunks of this many level pixels
CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Resolution:
    """µm per level-0 pixel in x and y, where it came from, and why it may not be trusted."""

    mpp_x_um: float
    mpp_y_um: float
    source: str  # "declared" or "fallback"
    warning: str | None = None

    @property
    def mean_um(self) -> float:
        return (self.mpp_x_um + self.mpp_y_um) / 2


def resolve_resolution(properties: dict[str, str], name: str, fallback_mpp_um: float | None) -> Resolution:
    """The slide's µm/px when it declares a plausible one, else the fallback with a warning, else InputError."""
    declared = declared_mpp(properties)
    if declared is not None and is_plausible(declared):
        return Resolution(declared[0], declared[1], "declared")
    if declared is None:
        problem = "declares no resolution (µm/px)"
    else:
        problem = f"declares an implausible resolution of {declared[0]:.4g} µm/px (a screen-dpi default?)"
    if fallback_mpp_um is None:
        raise InputError(
            f"slide {name} {problem} and no fallback resolution is configured "
            "(set pipelines.wsi-ctc.fallback_mpp_um to process such slides)"
        )
    warning = f"slide {problem}; processed at the configured fallback of {fallback_mpp_um:g} µm/px"
    return Resolution(fallback_mpp_um, fallback_mpp_um, "fallback", warning)


@contextlib.contextmanager
def slide_errors(name: str) -> Iterator[None]:
    """Turn openslide and file errors into InputError naming the slide."""
    try:
        yield
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise InputError(f"{name}: unsupported file, not a slide format openslide reads ({exc})") from exc
    except openslide.OpenSlideError as exc:
        raise InputError(f"{name}: the slide is corrupt or truncated and cannot be decoded ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc


def choose_file(paths: Sequence[Path]) -> Path:
    """The file openslide should open: the slide itself, or for a DICOM series one instance it recognises."""
    if not paths:
        raise InputError("the input has no files")
    if len(paths) == 1:
        return paths[0]
    for path in sorted(paths):
        try:
            if openslide.OpenSlide.detect_format(str(path)) is not None:
                return path
        except (openslide.OpenSlideError, OSError) as exc:
            log.debug("%s is not a slide openslide recognises: %s", path.name, exc)
    raise InputError(f"none of the {len(paths)} files is a whole-slide image openslide reads")


@dataclass(frozen=True)
class LevelChoice:
    level: int
    downsample_x: float  # level-0 px per level px
    downsample_y: float


class SlideReader:
    """An open slide with its resolution; thread-safe for concurrent reads (openslide handles are)."""

    def __init__(self, path: Path, *, fallback_mpp_um: float | None, fill_rgb: tuple[int, int, int] = (255, 255, 255)):
        self.path = path
        self.name = path.name
        with slide_errors(self.name):
            if not path.exists():
                raise InputError(f"{self.name}: no such file")
            if openslide.OpenSlide.detect_format(str(path)) is None and looks_like_tiff(path):
                raise InputError(
                    f"{self.name}: a TIFF that openslide cannot read as a slide: truncated, corrupt, "
                    "or not tiled (strip-based TIFFs are not whole-slide images)"
                )
            self._slide = openslide.OpenSlide(str(path))
            self._slide.set_cache(openslide.OpenSlideCache(CACHE_BYTES))
            self.format = openslide.OpenSlide.detect_format(str(path)) or "unknown"
            self.properties = dict(self._slide.properties)
            self.level_dimensions: tuple[tuple[int, int], ...] = self._slide.level_dimensions
            self.level_downsamples: tuple[float, ...] = self._slide.level_downsamples
        self.width_l0, self.height_l0 = self.level_dimensions[0]
        if self.width_l0 <= 0 or self.height_l0 <= 0:
            raise InputError(f"{self.name}: the slide has no pixels ({self.width_l0}x{self.height_l0})")
        self.resolution = resolve_resolution(self.properties, self.name, fallback_mpp_um)
        self.fill_rgb = fill_rgb

    @classmethod
    def open(cls, paths: Sequence[Path], *, fallback_mpp_um: float | None) -> SlideReader:
        return cls(choose_file(paths), fallback_mpp_um=fallback_mpp_um)

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._slide.close()

    @property
    def vendor(self) -> str | None:
        return self.properties.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def background_rgb(self) -> tuple[int, int, int] | None:
        value = self.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
        if value is None or len(value) != 6:
            return None
        try:
            return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
        except ValueError:
            return None

    # ------------------------------------------------------------------------------------ levels

    def level_for(self, mpp_um: float) -> LevelChoice:
        """The coarsest level whose pixels are at most ``mpp_um`` (level 0 when the slide is coarser)."""
        wanted = mpp_um / self.resolution.mean_um  # level-0 px per output px
        best = 0
        for level, downsample in enumerate(self.level_downsamples):
            if downsample <= wanted * LEVEL_TOLERANCE:
                best = level
        lv_w, lv_h = self.level_dimensions[best]
        return LevelChoice(best, self.width_l0 / lv_w, self.height_l0 / lv_h)

    def l0_per_px(self, mpp_um: float) -> tuple[float, float]:
        """Level-0 pixels per output pixel at ``mpp_um`` in x and y."""
        return (mpp_um / self.resolution.mpp_x_um, mpp_um / self.resolution.mpp_y_um)

    # ------------------------------------------------------------------------------------ reading

    def read(self, l0_x: float, l0_y: float, out_w: int, out_h: int, mpp_um: float,
             choice: LevelChoice | None = None) -> np.ndarray:
        """RGB uint8 ``(out_h, out_w, 3)`` of the region at level-0 ``(l0_x, l0_y)`` resampled to ``mpp_um``."""
        choice = choice or self.level_for(mpp_um)
        sx, sy = self.l0_per_px(mpp_um)
        lv_w_exact = out_w * sx / choice.downsample_x
        lv_h_exact = out_h * sy / choice.downsample_y
        lv_w, lv_h = max(1, math.ceil(lv_w_exact - 1e-6)), max(1, math.ceil(lv_h_exact - 1e-6))
        with slide_errors(self.name):
            region = self._slide.read_region((round(l0_x), round(l0_y)), choice.level, (lv_w, lv_h))
        rgba = np.asarray(region)
        rgb = self._flatten(rgba)
        if abs(lv_w_exact - out_w) / out_w > NO_RESAMPLE_TOLERANCE or abs(lv_h_exact - out_h) / out_h > (
            NO_RESAMPLE_TOLERANCE
        ):
            interpolation = cv2.INTER_AREA if lv_w > out_w else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (out_w, out_h), interpolation=interpolation)
        elif rgb.shape[:2] != (out_h, out_w):
            rgb = np.ascontiguousarray(rgb[:out_h, :out_w])
        return rgb

    def read_overview(self, mpp_um: float) -> np.ndarray:
        """The whole slide at a coarse ``mpp_um`` (a few MB), read chunk by chunk from the best level."""
        sx, sy = self.l0_per_px(mpp_um)
        out_w = max(1, round(self.width_l0 / sx))
        out_h = max(1, round(self.height_l0 / sy))
        choice = self.level_for(mpp_um)
        out = np.empty((out_h, out_w, 3), np.uint8)
        # chunks in output pixels so that each read stays near READ_CHUNK_LV level pixels
        step = max(8, int(READ_CHUNK_LV * choice.downsample_x / sx))
        for oy in range(0, out_h, step):
            for ox in range(0, out_w, step):
                w, h = min(step, out_w - ox), min(step, out_h - oy)
                out[oy : oy + h, ox : ox + w] = self.read(ox * sx, oy * sy, w, h, mpp_um, choice)
        return out

    def _flatten(self, rgba: np.ndarray) -> np.ndarray:
        rgb = rgba[..., :3]
        alpha = rgba[..., 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        a = alpha[..., None].astype(np.float32) / 255
        fill = np.array(self.background_rgb or self.fill_rgb, np.float32)
        out: np.ndarray = (rgb * a + fill * (1 - a)).astype(np.uint8)
        return out
