# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""An MR case's volume as the case page shows it: the series read with the pipeline's own loader
(:func:`pipelines.mri.volume.load_series`, so the slices are in the order and grid the pipeline analysed), the
result's lesion label map (``lesions.nii.gz``) on that grid, and slices of the acquired plane rendered as PNG
after window/level with each lesion's outline in its colour.

Loaded volumes stay in a small LRU (:class:`VolumeCache`, bounded in entries and bytes): scrolling through a
series asks for a slice per wheel step, and must not re-read the DICOM files for each.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from PIL import Image
from pydicom.errors import InvalidDicomError
from scipy import ndimage

from pipelines.errors import InputError
from pipelines.mri.volume import load_series

log = logging.getLogger(__name__)

CACHE_ENTRIES = 4  # volumes kept loaded
CACHE_BYTES = 1 << 30  # and at most this much memory for them
GRID_TOLERANCE = 1e-3  # mm (origin, spacing) and direction-cosine difference still taken as one grid
PERCENTILES = (1.0, 99.5)  # the default window when the header has none
PLANE_NAMES = ("sagittal", "coronal", "axial")  # a plane whose normal runs along L, P or S most
MAX_SIDE = 2048  # pixels of a reformat stretched to the slices' spacing
# distinct colours for lesion 1, 2, ... (repeating past the tenth)
COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


class VolumeError(Exception):
    """The case's series or label map cannot be read; the message says why."""


@dataclass(frozen=True)
class LesionExtent:
    index: int  # the lesion's value in the label map
    ranges: tuple[tuple[int, int], ...]  # first and last index along (slice, row, column), inclusive
    voxels: int
    centre: tuple[float, float, float]  # (slice, row, column), fractional voxel index

    @property
    def first_slice(self) -> int:
        return self.ranges[0][0]

    @property
    def last_slice(self) -> int:
        return self.ranges[0][1]


@dataclass(frozen=True)
class LoadedVolume:
    pixels: npt.NDArray[np.float32]  # (slices, rows, columns), values after rescale
    labels: npt.NDArray[np.uint16] | None  # same shape; None when the result has no usable label map
    spacing_mm: tuple[float, float, float]  # (column, row, slice)
    window: tuple[float, float]  # (centre, width)
    window_source: str  # "header" or "percentiles"
    lesions: tuple[LesionExtent, ...]
    label_error: str | None = None
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)  # LPS, row-major; column j: index axis j (x, y, z)

    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, columns = self.pixels.shape
        return int(slices), int(rows), int(columns)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes + (self.labels.nbytes if self.labels is not None else 0))


def colour(index: int) -> str:
    """The outline colour of lesion ``index`` as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*COLOURS[(index - 1) % len(COLOURS)])


def load_volume(paths: Sequence[Path], label_map: Path | None) -> LoadedVolume:
    """The series in ``paths`` and, when given and readable, the label map resampled onto its grid;
    VolumeError when the series cannot be read."""
    try:
        series = load_series(list(paths))
    except InputError as exc:
        raise VolumeError(f"the series cannot be read: {exc}") from exc
    pixels = np.ascontiguousarray(sitk.GetArrayFromImage(series.image), dtype=np.float32)
    labels, label_error = None, None
    if label_map is not None:
        try:
            labels = _labels_on(series.image, label_map)
        except VolumeError as exc:
            label_error = str(exc)
    window, source = _header_window(paths[0])
    if window is None:
        lo, hi = (float(v) for v in np.percentile(pixels, PERCENTILES))
        window, source = ((lo + hi) / 2, max(hi - lo, 1.0)), "percentiles"
    return LoadedVolume(pixels, labels, series.spacing_mm, window, source,
                        _extents(labels) if labels is not None else (), label_error,
                        tuple(float(v) for v in series.image.GetDirection()))


def _labels_on(image: sitk.Image, path: Path) -> npt.NDArray[np.uint16]:
    """The label map's values on ``image``'s voxel grid: as stored when the grids agree (the pipeline wrote it
    on the series grid), otherwise resampled by nearest neighbour through physical space."""
    if not path.is_file():
        raise VolumeError(f"the result has no {path.name}")
    try:
        labels = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError(f"{path.name} cannot be read: {str(exc).strip().splitlines()[-1]}") from exc
    if labels.GetNumberOfComponentsPerPixel() != 1 or labels.GetDimension() != 3:
        raise VolumeError(f"{path.name} is not a 3-D label map")
    if not _same_grid(labels, image):
        labels = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(labels)
    if array.min() < 0 or array.max() > np.iinfo(np.uint16).max:
        raise VolumeError(f"{path.name} holds values outside 0..65535: not a label map")
    return np.ascontiguousarray(array, dtype=np.uint16)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GRID_TOLERANCE)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=GRID_TOLERANCE)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=GRID_TOLERANCE))


def _extents(labels: npt.NDArray[np.uint16]) -> tuple[LesionExtent, ...]:
    found = []
    boxes = ndimage.find_objects(labels)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = labels[box] == index
        offset = [s.start for s in box]
        centre = [float(c) + o for c, o in zip(ndimage.center_of_mass(mask), offset, strict=True)]
        found.append(LesionExtent(index, tuple((int(b.start), int(b.stop) - 1) for b in box), int(mask.sum()),
                                  (round(centre[0], 2), round(centre[1], 2), round(centre[2], 2))))
    return tuple(found)


def _header_window(path: Path) -> tuple[tuple[float, float] | None, str]:
    """WindowCenter/WindowWidth of the first file (a multi-frame file's shared functional groups), if any."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError):  # then: no header window
        return None, "percentiles"
    holders: list[Any] = [ds]
    for group in ds.get("SharedFunctionalGroupsSequence") or []:
        holders.extend(group.get("FrameVOILUTSequence") or [])
    for holder in holders:
        centre, width = _first(holder.get("WindowCenter")), _first(holder.get("WindowWidth"))
        if centre is not None and width is not None and width > 0:
            return (centre, width), "header"
    return None, "percentiles"


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if np.isfinite(number) else None


def planes(volume: LoadedVolume) -> list[dict[str, Any]]:
    """The planes a volume can be shown in: axis 0 the acquired one, 1 and 2 reformats across its rows and its
    columns; each named for the patient axis its normal runs along most."""
    matrix = np.array(volume.direction, dtype=float).reshape(3, 3)
    return [{"axis": axis, "name": PLANE_NAMES[int(np.argmax(np.abs(matrix[:, 2 - axis])))],
             "slices": int(volume.pixels.shape[axis]), "acquired": axis == 0} for axis in range(3)]


def render_slice(volume: LoadedVolume, k: int, centre: float, width: float, outlines: bool, axis: int = 0) -> bytes:
    """Slice ``k`` across array axis ``axis`` (0: the acquired plane) as PNG: values mapped to 0..255 through the
    window (centre, width), greyscale, or RGB with the outline of each lesion that crosses it in its colour. A
    reformat is shown with the slices running vertically, superior up, and stretched to square millimetres."""
    plane = np.take(volume.pixels, k, axis=axis)
    low = centre - width / 2
    grey = (np.clip((plane - low) / width, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(grey)
    labels = None if volume.labels is None else np.take(volume.labels, k, axis=axis)
    if outlines and labels is not None and labels.any():
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        edge = _edges(labels)
        palette = np.array(COLOURS, dtype=np.uint8)
        rgb[edge] = palette[(labels[edge].astype(np.int64) - 1) % len(COLOURS)]
        image = Image.fromarray(rgb)
    if axis != 0:
        image = _presented(image, volume, axis)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _presented(image: Image.Image, volume: LoadedVolume, axis: int) -> Image.Image:
    """A reformat (vertical: the slices; horizontal: the columns or the rows) turned so that superior is up and
    the patient's left or back is right, and stretched vertically to the slices' spacing (nearest neighbour:
    the outlines keep their colours)."""
    matrix = np.array(volume.direction, dtype=float).reshape(3, 3)
    vertical, horizontal = matrix[:, 2], matrix[:, 0 if axis == 1 else 1]  # index axis z; x (columns) or y (rows)
    if int(np.argmax(np.abs(vertical))) == 2 and vertical[2] > 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if horizontal[int(np.argmax(np.abs(horizontal)))] < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    across = volume.spacing_mm[0] if axis == 1 else volume.spacing_mm[1]
    height = round(image.height * volume.spacing_mm[2] / across)
    return image.resize((image.width, max(1, min(height, MAX_SIDE))), Image.Resampling.NEAREST)


def _edges(labels: npt.NDArray[np.uint16]) -> npt.NDArray[np.bool_]:
    """Pixels of a lesion with a 4-neighbour outside it (another label, background or the image border)."""
    padded = np.pad(labels, 1, mode="constant")
    centre = padded[1:-1, 1:-1]
    differs = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
               | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
    return np.asarray((labels > 0) & differs)


class VolumeCache:
    """Loaded volumes by key, least recently used dropped first past ``entries`` or ``max_bytes``; one load per
    key at a time (the page's first slice requests come together). A failed load is not kept."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._volumes: OrderedDict[Hashable, LoadedVolume] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], LoadedVolume]) -> LoadedVolume:
        with self._lock:
            found = self._cached(key)
            if found is not None:
                return found
            pending = self._loading.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                found = self._cached(key)
            if found is not None:
                return found
            try:
                volume = load()
                self._keep(key, volume)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return volume

    def __len__(self) -> int:
        with self._lock:
            return len(self._volumes)

    def clear(self) -> None:
        with self._lock:
            self._volumes.clear()

    def _cached(self, key: Hashable) -> LoadedVolume | None:
        found = self._volumes.get(key)
        if found is not None:
            self._volumes.move_to_end(key)
        return found

    def _keep(self, key: Hashable, volume: LoadedVolume) -> None:
        if volume.nbytes > self.max_bytes:
            log.warning("a volume of %d MiB is over the cache's bound: not kept", volume.nbytes >> 20)
            return
        with self._lock:
            self._volumes[key] = volume
            self._volumes.move_to_end(key)
            while len(self._volumes) > self.entries or sum(v.nbytes for v in self._volumes.values()) > self.max_bytes:
                self._volumes.popitem(last=False)
