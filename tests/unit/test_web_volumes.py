# mypy: disable-error-code="no-untyped-call"
"""The MR case's volumes (agent/web/volumes.py): a generated series read with the pipeline's loader, a label map
placed by the generator's own geometry, outlines drawn where the generator put the lesion, the LRU's bounds."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk
from PIL import Image

from agent.web.volumes import COLOURS, LoadedVolume, VolumeCache, VolumeError, load_volume, planes, render_slice
from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, volume_geometry, write_mr_series

SPEC = MRSeriesSpec(rows=64, columns=64, slices=12, pixel_spacing_mm=4.0, slice_thickness_mm=6.0, lesions=1,
                    seed=4242)
OBLIQUE = (0.9659258, 0.2588190, 0.0, 0.0, 0.0, -1.0)  # a coronal-ish plane, tilted 15° about the vertical


def write_label_map(path: Path, series: MRSeries, spec: MRSeriesSpec, shrink: int = 1) -> None:
    """The generator's lesion mask as a NIfTI file on the grid the generator describes (not the loader's), at
    1/``shrink`` of the in-plane resolution when asked (a map on another grid)."""
    mask = series.lesion_mask[:, ::shrink, ::shrink]
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask))
    origin, direction = volume_geometry(spec)
    if shrink > 1:  # voxel centres move: the first one sits half a coarse voxel in from the original's corner
        row_dir, col_dir = np.array(direction).reshape(3, 3)[:, 0], np.array(direction).reshape(3, 3)[:, 1]
        shift = (shrink - 1) / 2 * spec.pixel_spacing_mm
        origin = tuple(float(v) for v in np.array(origin) + shift * row_dir + shift * col_dir)  # type: ignore[assignment]
    image.SetOrigin(origin)
    image.SetDirection(direction)
    image.SetSpacing((spec.pixel_spacing_mm * shrink, spec.pixel_spacing_mm * shrink, spec.slice_thickness_mm))
    sitk.WriteImage(image, str(path), useCompression=True)


def pixels(png: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def outline_at(volume: LoadedVolume, k: int, colour: tuple[int, int, int]) -> npt.NDArray[np.intp]:
    """(row, column) of the pixels drawn in ``colour`` on slice ``k``."""
    centre, width = volume.window
    drawn = pixels(render_slice(volume, k, centre, width, outlines=True))
    return np.argwhere(np.all(drawn == colour, axis=2))


@pytest.mark.parametrize("orientation", [SPEC.orientation, OBLIQUE], ids=["axial", "oblique"])
@pytest.mark.parametrize("shrink", [1, 2], ids=["same-grid", "coarser-grid"])
def test_outlines_are_drawn_where_the_generator_put_the_lesion(tmp_path: Path, orientation: tuple[float, ...],
                                                                shrink: int) -> None:
    spec = MRSeriesSpec(**{**SPEC.__dict__, "orientation": orientation})
    series = write_mr_series(tmp_path / "series", spec)
    write_label_map(tmp_path / "lesions.nii.gz", series, spec, shrink)
    volume = load_volume(series.files, tmp_path / "lesions.nii.gz")
    assert volume.shape == (spec.slices, spec.rows, spec.columns) and volume.label_error is None
    truth = series.lesions[0]
    k, row, column = truth.centre_ijk
    [extent] = volume.lesions
    assert extent.first_slice <= round(k) <= extent.last_slice
    assert np.allclose(extent.centre, truth.centre_ijk, atol=1.0 * shrink)
    drawn = outline_at(volume, round(k), COLOURS[0])
    assert len(drawn) > 0
    middle = drawn.mean(axis=0)
    assert abs(middle[0] - row) < 1.5 * shrink and abs(middle[1] - column) < 1.5 * shrink
    assert np.linalg.norm(drawn - [row, column], axis=1).max() < truth.radius_mm * 1.6 / spec.pixel_spacing_mm + shrink
    far = next(z for z in range(spec.slices) if abs(z - k) > truth.radius_mm / spec.slice_thickness_mm + 2)
    assert len(outline_at(volume, far, COLOURS[0])) == 0


def test_reformats_show_the_lesion_where_it_is_superior_up_in_square_millimetres(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "series", SPEC)
    write_label_map(tmp_path / "lesions.nii.gz", series, SPEC)
    volume = load_volume(series.files, tmp_path / "lesions.nii.gz")
    assert [(p["name"], p["slices"]) for p in planes(volume)] == [("axial", 12), ("coronal", 64), ("sagittal", 64)]
    k, row, column = series.lesions[0].centre_ijk
    stretch = SPEC.slice_thickness_mm / SPEC.pixel_spacing_mm
    for axis, across in ((1, column), (2, row)):  # through the lesion's row: coronal; its column: sagittal
        centre, width = volume.window
        shown = pixels(render_slice(volume, round((row, column)[axis - 1]), centre, width, True, axis=axis))
        assert shown.shape[:2] == (round(SPEC.slices * stretch), 64)
        drawn = np.argwhere(np.all(shown == COLOURS[0], axis=2))
        assert len(drawn) > 0, axis
        up = (SPEC.slices - 0.5 - k) * stretch  # the first slice is the most inferior (z grows with k): at the bottom
        assert abs(drawn[:, 0].mean() - up) < 1.5 * stretch and abs(drawn[:, 1].mean() - across) < 1.5, axis


def test_window_level_maps_values_and_outlines_can_be_left_off(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "series", SPEC)
    write_label_map(tmp_path / "lesions.nii.gz", series, SPEC)
    volume = load_volume(series.files, tmp_path / "lesions.nii.gz")
    assert volume.window_source == "percentiles"
    k = round(series.lesions[0].centre_ijk[0])
    centre, width = volume.window
    plain = np.asarray(Image.open(io.BytesIO(render_slice(volume, k, centre, width, outlines=False))))
    assert plain.ndim == 2  # greyscale: no outline
    expected = np.clip((volume.pixels[k] - (centre - width / 2)) / width, 0, 1) * 255
    assert np.abs(plain.astype(float) - expected).max() <= 1.0
    narrow = np.asarray(Image.open(io.BytesIO(render_slice(volume, k, centre, width / 4, outlines=False))))
    assert (narrow == 255).sum() > (plain == 255).sum() and (narrow == 0).sum() > (plain == 0).sum()


def test_a_missing_or_broken_label_map_leaves_the_image_and_says_why(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "series", SPEC)
    missing = load_volume(series.files, tmp_path / "lesions.nii.gz")
    assert (missing.labels, missing.lesions, missing.label_error) == (None, (), "the result has no lesions.nii.gz")
    (tmp_path / "lesions.nii.gz").write_bytes(b"not a nifti")
    broken = load_volume(series.files, tmp_path / "lesions.nii.gz")
    assert broken.labels is None and "lesions.nii.gz cannot be read" in str(broken.label_error)
    assert render_slice(broken, 0, 100, 200, outlines=True).startswith(b"\x89PNG")


def test_an_unreadable_series_is_a_volume_error(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "series", SPEC)
    with pytest.raises(VolumeError, match="missing slice"):
        load_volume([f for i, f in enumerate(series.files) if i != 5], None)
    series.files[0].unlink()
    with pytest.raises(VolumeError, match=r"IM0000\.dcm: not a readable DICOM file"):
        load_volume(series.files, None)


def test_the_cache_keeps_the_most_recent_volumes_within_its_bounds() -> None:
    loads: list[str] = []

    def loader(name: str, side: int) -> Callable[[], LoadedVolume]:
        def load() -> LoadedVolume:
            loads.append(name)
            return LoadedVolume(np.zeros((side, side, side), np.float32), None, (1.0, 1.0, 1.0), (0.0, 1.0),
                                "percentiles", ())
        return load

    cache = VolumeCache(entries=2, max_bytes=3 * 4 * 16**3)
    a = cache.get("a", loader("a", 16))
    assert cache.get("a", loader("a", 16)) is a and loads == ["a"]
    cache.get("b", loader("b", 16))
    cache.get("a", loader("a", 16))  # a is now the most recent
    cache.get("c", loader("c", 16))  # over two entries: b goes
    assert len(cache) == 2 and loads == ["a", "b", "c"]
    cache.get("a", loader("a", 16))
    cache.get("b", loader("b", 16))
    assert loads == ["a", "b", "c", "b"]
    cache.get("big", loader("big", 22))  # 42 KB of the 48 KB bound: the others go to make room
    assert len(cache) == 1
    cache.get("huge", loader("huge", 24))  # over the bound alone: served, not kept
    cache.get("huge", loader("huge", 24))
    assert loads[-2:] == ["huge", "huge"] and len(cache) == 1

    def failing() -> LoadedVolume:
        raise VolumeError("gone")

    with pytest.raises(VolumeError):
        cache.get("x", failing)
    assert len(cache) == 1
