"""Series → volume: ordering, geometry, rescale, multi-frame, and every refusal with its reason."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipelines.errors import InputError
from pipelines.mri.volume import load_series
from pipelines.synthetic.mri_series import (
    MRSeries,
    MRSeriesSpec,
    volume_geometry,
    write_enhanced_mr_series,
    write_mr_series,
)

A, B = np.radians(25), np.radians(-20)
# axial rotated 25 degrees in-plane and tilted 20 degrees: orthonormal row and column directions
OBLIQUE = (float(np.cos(A)), float(np.sin(A)), 0.0,
           float(-np.sin(A) * np.cos(B)), float(np.cos(A) * np.cos(B)), float(np.sin(B)))
SPEC = MRSeriesSpec(rows=40, columns=48, slices=9, pixel_spacing_mm=1.25, slice_thickness_mm=2.5, seed=21)


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture
def series(tmp_path: Path) -> MRSeries:
    return write_mr_series(tmp_path / "ordered", SPEC)


def test_ordered_series_gives_the_stored_volume_with_its_geometry(series: MRSeries) -> None:
    vol = load_series(series.files)
    assert np.array_equal(array(vol.image), series.volume.astype(np.float32))
    assert vol.image.GetSize() == (48, 40, 9)
    assert vol.spacing_mm == pytest.approx((1.25, 1.25, 2.5))
    origin, direction = volume_geometry(SPEC)
    assert vol.image.GetOrigin() == pytest.approx(origin)
    assert vol.image.GetDirection() == pytest.approx(direction)
    assert vol.series_uid == series.series_uid and vol.study_uid == series.study_uid
    assert vol.instances == 9 and vol.warnings == ()


def test_shuffled_files_and_instance_numbers_give_the_same_volume(series: MRSeries, tmp_path: Path) -> None:
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rng = random.Random(4)
    names = [f"x{rng.randrange(10**6):06d}-{i}.dcm" for i in range(len(series.files))]
    rng.shuffle(names)
    numbers = list(range(1, len(series.files) + 1))
    rng.shuffle(numbers)
    for source, name, number in zip(series.files, names, numbers, strict=True):
        ds = pydicom.dcmread(source)
        ds.InstanceNumber = number  # InstanceNumber lies too: only the positions count
        ds.save_as(shuffled / name)
    files = list(shuffled.iterdir())
    rng.shuffle(files)
    reference = load_series(series.files)
    vol = load_series(files)
    assert np.array_equal(array(vol.image), array(reference.image))
    assert vol.image.GetOrigin() == reference.image.GetOrigin()


def test_descending_positions_are_put_in_ascending_order_along_the_normal(series: MRSeries, tmp_path: Path) -> None:
    out = tmp_path / "descending"
    out.mkdir()
    n = len(series.files)
    for k, source in enumerate(series.files):
        ds = pydicom.dcmread(source)
        ds.PixelData = np.ascontiguousarray(series.volume[n - 1 - k]).tobytes()  # file k holds slice n-1-k ...
        mirrored = pydicom.dcmread(series.files[n - 1 - k])
        ds.ImagePositionPatient = mirrored.ImagePositionPatient  # ... at that slice's position
        ds.save_as(out / source.name)
    vol = load_series(sorted(out.iterdir()))
    assert np.array_equal(array(vol.image), series.volume.astype(np.float32))


def test_oblique_series_keeps_its_direction_cosines(tmp_path: Path) -> None:
    spec = MRSeriesSpec(rows=32, columns=32, slices=7, orientation=OBLIQUE, seed=22)
    series = write_mr_series(tmp_path / "oblique", spec)
    vol = load_series(series.files)
    assert np.array_equal(array(vol.image), series.volume.astype(np.float32))
    matrix = np.array(vol.image.GetDirection()).reshape(3, 3)
    assert matrix[:, 0] == pytest.approx(OBLIQUE[:3], abs=1e-6)
    assert matrix[:, 1] == pytest.approx(OBLIQUE[3:], abs=1e-6)
    assert matrix[:, 2] == pytest.approx(np.cross(OBLIQUE[:3], OBLIQUE[3:]), abs=1e-6)
    # physical point of voxel (i, j, k) is the DICOM formula: IPP_k + i*dx*row + j*dy*col
    first = pydicom.dcmread(series.files[3])
    expected = np.array(first.ImagePositionPatient, dtype=float) + 5 * 1.5 * np.array(OBLIQUE[:3]) \
        + 7 * 1.5 * np.array(OBLIQUE[3:])
    assert vol.image.TransformIndexToPhysicalPoint((5, 7, 3)) == pytest.approx(tuple(expected), abs=1e-3)


def test_enhanced_multiframe_with_frames_out_of_order_gives_the_same_volume(tmp_path: Path) -> None:
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    enhanced = write_enhanced_mr_series(tmp_path / "enhanced" / "mr.dcm", SPEC, frame_order=order)
    single = write_mr_series(tmp_path / "single", SPEC)
    a, b = load_series(enhanced.files), load_series(single.files)
    assert np.array_equal(array(a.image), array(b.image))
    assert a.image.GetOrigin() == pytest.approx(b.image.GetOrigin())
    assert a.image.GetDirection() == pytest.approx(b.image.GetDirection())
    assert a.image.GetSpacing() == pytest.approx(b.image.GetSpacing())


def test_rescale_slope_and_intercept_are_applied(series: MRSeries, tmp_path: Path) -> None:
    out = tmp_path / "rescaled"
    out.mkdir()
    for source in series.files:
        ds = pydicom.dcmread(source)
        ds.RescaleSlope, ds.RescaleIntercept = 2.5, -100
        ds.save_as(out / source.name)
    vol = load_series(sorted(out.iterdir()))
    assert np.allclose(array(vol.image), series.volume.astype(np.float32) * 2.5 - 100)


def test_enhanced_rescale_comes_from_the_functional_groups(tmp_path: Path) -> None:
    enhanced = write_enhanced_mr_series(tmp_path / "e.dcm", SPEC)
    ds = pydicom.dcmread(enhanced.files[0])
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    transform.RescaleSlope, transform.RescaleIntercept = 0.5, 10
    ds.save_as(enhanced.files[0])
    vol = load_series(enhanced.files)
    assert np.allclose(array(vol.image), series_values(enhanced) * 0.5 + 10)


def series_values(series: MRSeries) -> np.ndarray:
    return series.volume.astype(np.float32)


# ----------------------------------------------------------------------------------------- refusals


def edit(series: MRSeries, tmp_path: Path, change: dict[int, dict[str, object]], drop: tuple[int, ...] = ()
         ) -> list[Path]:
    out = tmp_path / "edited"
    out.mkdir(exist_ok=True)
    files = []
    for k, source in enumerate(series.files):
        if k in drop:
            continue
        ds = pydicom.dcmread(source)
        for keyword, value in {**change.get(-1, {}), **change.get(k, {})}.items():
            setattr(ds, keyword, value)
        ds.save_as(out / source.name)
        files.append(out / source.name)
    return files


def position(series: MRSeries, k: int, dz: float) -> list[float]:
    p = [float(v) for v in pydicom.dcmread(series.files[k]).ImagePositionPatient]
    return [p[0], p[1], p[2] + dz]


@pytest.mark.parametrize(
    ("change", "drop", "reason"),
    [
        ({-1: {"ImageOrientationPatient": [0.9, 0.42, 0.0, 0.0, 0.26, -0.97]}}, (),
         r"IM0000.dcm: ImageOrientationPatient .* is not two orthogonal unit vectors"),
        ({-1: {"Modality": "CT"}}, (), r"modality CT: this pipeline reads MR series only"),
        ({}, (1, 2, 3, 4, 5, 6, 7, 8), r"single-slice series \(1 image\)"),
        ({}, (4,), r"missing slice\(s\): a gap of 5.00 mm between IM0003.dcm and IM0005.dcm where the series "
                   r"spacing is 2.50 mm \(about 1 slice\(s\) absent\)"),
        ({6: {"ImageOrientationPatient": [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]}}, (),
         r"mixed orientations: 2 different ImageOrientationPatient values in 9 images"),
        ({-1: {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}}, (), r"a localizer \(ImageType"),
        ({-1: {"SeriesDescription": "3-plane Localizer"}}, (), r"names a localizer/scout"),
        ({2: {"Rows": 20}}, (), r"image sizes differ within the series: 20x48, 40x48"),
        ({3: {"PixelSpacing": [1.3, 1.3]}}, (), r"pixel spacing differs within the series"),
        ({0: {"SeriesInstanceUID": "1.2.3.4"}}, (), r"the files belong to 2 different series"),
    ],
)
def test_irregular_series_are_refused_with_the_reason(
    series: MRSeries, tmp_path: Path, change: dict[int, dict[str, object]], drop: tuple[int, ...], reason: str
) -> None:
    with pytest.raises(InputError, match=reason):
        load_series(edit(series, tmp_path, change, drop))


def test_repeated_positions_are_refused(series: MRSeries, tmp_path: Path) -> None:
    files = edit(series, tmp_path, {k: {"ImagePositionPatient": position(series, k % 3, 0.0)} for k in range(9)})
    with pytest.raises(InputError, match=r"repeated slice positions: 9 images at 3 position\(s\)"):
        load_series(files)


def test_uneven_spacing_is_refused(series: MRSeries, tmp_path: Path) -> None:
    files = edit(series, tmp_path, {5: {"ImagePositionPatient": position(series, 5, 0.6)}})
    with pytest.raises(InputError, match=r"uneven slice spacing: gaps from 1.900 to 3.100 mm"):
        load_series(files)


def test_sheared_stack_is_refused(series: MRSeries, tmp_path: Path) -> None:
    shifted = {k: {"ImagePositionPatient": [p[0] + 2.0 * k, p[1], p[2]]}
               for k in range(9) for p in [position(series, k, 0.0)]}
    with pytest.raises(InputError, match=r"slices are not stacked along their normal"):
        load_series(edit(series, tmp_path, shifted))


def test_corrupt_and_truncated_files_are_refused(series: MRSeries, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(series.folder, corrupt)
    (corrupt / "IM0004.dcm").write_bytes(b"this is not DICOM at all")
    with pytest.raises(InputError, match=r"IM0004.dcm: not a readable DICOM file"):
        load_series(sorted(corrupt.iterdir()))
    truncated = tmp_path / "truncated"
    shutil.copytree(series.folder, truncated)
    data = (truncated / "IM0004.dcm").read_bytes()
    (truncated / "IM0004.dcm").write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError, match=r"IM0004.dcm: pixel data cannot be decoded"):
        load_series(sorted(truncated.iterdir()))


def test_enhanced_without_frame_positions_is_refused(tmp_path: Path) -> None:
    enhanced = write_enhanced_mr_series(tmp_path / "e.dcm", SPEC)
    ds = pydicom.dcmread(enhanced.files[0])
    del ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence
    ds.save_as(enhanced.files[0])
    with pytest.raises(InputError, match=r"e.dcm frame 4: no ImagePositionPatient \(PlanePositionSequence\)"):
        load_series(enhanced.files)


def test_no_files_and_no_pixels_are_refused(series: MRSeries, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the series has no files"):
        load_series([])
    ds = pydicom.dcmread(series.files[0])
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(InputError, match=r"nopixels.dcm: no pixel data \(MR Image Storage\), not an image"):
        load_series([tmp_path / "nopixels.dcm", *series.files[1:]])
