from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from pipelines.synthetic.mri_series import (
    MRSeriesSpec,
    render_phantom,
    volume_geometry,
    write_enhanced_mr_series,
    write_mr_series,
)


def test_mr_series_geometry_is_consistent(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=8, rows=32, columns=32, slice_thickness_mm=2.5))
    datasets = [pydicom.dcmread(p) for p in series.files]
    assert {ds.SeriesInstanceUID for ds in datasets} == {series.series_uid}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 8
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), 2.5)
    assert np.array_equal(datasets[3].pixel_array, series.volume[3])
    assert series.lesion_mask.max() >= 1


def test_same_seed_same_series_other_seed_other_series() -> None:
    spec = MRSeriesSpec(rows=64, columns=64, slices=12, lesions=2, seed=5)
    a, mask_a, truth_a = render_phantom(spec)
    b, mask_b, truth_b = render_phantom(spec)
    c, _, _ = render_phantom(MRSeriesSpec(rows=64, columns=64, slices=12, lesions=2, seed=6))
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b) and truth_a == truth_b
    assert not np.array_equal(a, c)


def test_oblique_series_positions_follow_the_slice_normal(tmp_path: Path) -> None:
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal, rotated 20 degrees about the feet-head axis
    spec = MRSeriesSpec(rows=24, columns=32, slices=6, orientation=orientation, seed=2)
    series = write_mr_series(tmp_path / "obl", spec)
    datasets = [pydicom.dcmread(p) for p in series.files]
    normal = np.cross(orientation[:3], orientation[3:])
    along = [float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)) for ds in datasets]
    assert np.allclose(np.diff(along), spec.slice_thickness_mm, atol=1e-3)
    origin, direction = volume_geometry(spec)
    assert np.allclose(origin, [float(v) for v in datasets[0].ImagePositionPatient])
    assert np.allclose(np.array(direction).reshape(3, 3)[:, 2], normal)


def test_forced_labels_and_truth_match_the_mask() -> None:
    spec = MRSeriesSpec(rows=96, columns=96, slices=20, lesions=2, labels=("benign", "malignant"), seed=9)
    volume, mask, truths = render_phantom(spec)
    assert [t.label for t in truths] == ["benign", "malignant"]
    for t in truths:
        assert t.voxels == int((mask == t.index).sum()) > 0
    assert volume.dtype == np.uint16 and int(volume.max()) <= 4095
    with pytest.raises(ValueError, match="2 labels given for 3 lesions"):
        render_phantom(MRSeriesSpec(lesions=3, labels=("benign", "malignant")))


def test_background_is_noisy_and_lesions_are_brighter_than_the_liver_around_them() -> None:
    volume, mask, _ = render_phantom(MRSeriesSpec(rows=128, columns=128, slices=24, lesions=1, seed=4))
    air = volume[:, :4, :4].astype(float)
    assert air.std() > 1.0  # Rician noise, not a flat background
    lesion = mask == 1
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1)
    assert volume[lesion].mean() > 1.2 * volume[ring].mean()


def _irregularity(mask: np.ndarray) -> float:
    """Surface voxels per volume^(2/3): 4.8-ish for a ball, larger for lobulated, spiculated shapes."""
    inside = mask > 0
    surface = inside & ~ndimage.binary_erosion(inside)
    return float(surface.sum()) / float(inside.sum()) ** (2 / 3)


def test_malignant_lesions_are_on_average_more_irregular_and_heterogeneous() -> None:
    stats: dict[str, list[tuple[float, float]]] = {"benign": [], "malignant": []}
    for seed in range(6):
        for label in ("benign", "malignant"):
            spec = MRSeriesSpec(rows=96, columns=96, slices=40, pixel_spacing_mm=2.0, slice_thickness_mm=2.0,
                                lesions=1, labels=(label,), seed=100 + seed)
            volume, mask, _ = render_phantom(spec)
            values = volume[ndimage.binary_erosion(mask > 0)].astype(float)
            stats[label].append((_irregularity(mask), values.std() / values.mean()))
    benign, malignant = np.array(stats["benign"]), np.array(stats["malignant"])
    assert malignant[:, 0].mean() > benign[:, 0].mean()
    assert malignant[:, 1].mean() > 1.5 * benign[:, 1].mean()


def test_enhanced_multiframe_holds_every_slice_with_its_position(tmp_path: Path) -> None:
    spec = MRSeriesSpec(rows=20, columns=24, slices=5, seed=3)
    order = [2, 0, 4, 1, 3]
    series = write_enhanced_mr_series(tmp_path / "enh.dcm", spec, frame_order=order)
    ds = pydicom.dcmread(series.files[0])
    assert ds.SOPClassUID.name == "Enhanced MR Image Storage" and int(ds.NumberOfFrames) == 5
    frames = ds.pixel_array
    for frame, k in enumerate(order):
        assert np.array_equal(frames[frame], series.volume[k])
        z = float(ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient[2])
        assert z == pytest.approx(-spec.slices * spec.slice_thickness_mm / 2 + k * spec.slice_thickness_mm)
    with pytest.raises(ValueError, match="permutation"):
        write_enhanced_mr_series(tmp_path / "bad.dcm", spec, frame_order=[0, 0, 1, 2, 3])
