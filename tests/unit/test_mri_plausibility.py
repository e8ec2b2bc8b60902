# mypy: disable-error-code="no-untyped-call"
"""Plausibility of segmented lesions: sheet-shaped masks and fluid-bright blobs are flagged, generated lesions not."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from pipelines.mri.cases import case_from_spec, random_spec
from pipelines.mri.plausibility import (
    IMPLAUSIBLE,
    Shape,
    fluid_reason,
    lesion_reasons,
    mark_implausible,
    sheet_reason,
)
from pipelines.mri.segmentation import lesions_from_mask

SPACING = (1.5, 1.5, 3.0)  # x, y, z
SHAPE = (24, 96, 160)  # z, y, x


def reasons_of(mask: npt.NDArray[np.uint8], values: npt.NDArray[np.float32]) -> list[list[str]]:
    """Each component of ``mask`` as the pipeline measures it, and the reasons it is implausible."""
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing(SPACING)
    segmentation = lesions_from_mask(image, 0.5)
    labels = sitk.GetArrayViewFromImage(segmentation.labels)
    return [lesion_reasons(Shape(les.volume_ml, les.longest_diameter_mm), values, labels, les.label, les.bbox_index)
            for les in segmentation.lesions]


def background(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    return (330.0 + 10.0 * rng.standard_normal(SHAPE)).astype(np.float32)


def ball(centre: tuple[int, int, int], radius_mm: float) -> npt.NDArray[np.bool_]:
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    r2 = (((z - centre[0]) * SPACING[2]) ** 2 + ((y - centre[1]) * SPACING[1]) ** 2
          + ((x - centre[2]) * SPACING[0]) ** 2)
    inside: npt.NDArray[np.bool_] = r2 <= radius_mm**2
    return inside


def test_sheet_reason_compares_the_longest_diameter_with_a_compact_lesion_of_the_volume() -> None:
    reason = sheet_reason(Shape(volume_ml=5.0, longest_diameter_mm=200.0))
    assert reason == ("sheet-like shape: longest diameter 200 mm where a compact lesion of 5.0 mL spans about 21 mm "
                      "(ratio 9.4, over 3)")
    assert sheet_reason(Shape(volume_ml=5.0, longest_diameter_mm=40.0)) is None  # elongated, still a lesion


def test_a_sheet_shaped_mask_is_flagged() -> None:
    rng = np.random.default_rng(1)
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:12, 48, 15:145] = 1  # 2 slices thick, one voxel deep, 194 mm long: an object's bright edge
    values = background(rng)
    values[mask > 0] = 700.0
    (reasons,) = reasons_of(mask, values)
    assert len(reasons) == 1
    assert reasons[0].startswith("sheet-like shape: longest diameter 194 mm where a compact lesion of 1.8 mL")


def test_a_fluid_bright_homogeneous_blob_is_flagged_and_a_solid_or_heterogeneous_one_is_not() -> None:
    rng = np.random.default_rng(2)
    values = background(rng)
    mask = np.zeros(SHAPE, np.uint8)
    cyst, solid, necrotic = ball((12, 48, 30), 14.0), ball((12, 48, 80), 14.0), ball((12, 48, 130), 14.0)
    mask[cyst | solid | necrotic] = 1
    values[cyst] = 1600.0 + 10.0 * rng.standard_normal(int(cyst.sum()))  # bile, urine, a cyst: ~5x the liver
    values[solid] = 800.0 + 10.0 * rng.standard_normal(int(solid.sum()))  # a T2-bright solid lesion: ~2.4x
    values[necrotic] = 1600.0 * (1 + 0.3 * rng.standard_normal(int(necrotic.sum())))  # bright, heterogeneous
    by_position = dict(zip(["cyst", "solid", "necrotic"], sorted(
        zip(reasons_of(mask, values), _x_centres(mask), strict=True), key=lambda pair: pair[1]), strict=True))
    assert len(by_position["cyst"][0]) == 1
    assert by_position["cyst"][0][0].startswith("fluid-like T2 signal: 4.9 times as bright as its surroundings")
    assert by_position["solid"][0] == [] and by_position["necrotic"][0] == []


def test_fluid_reason_leaves_other_lesions_out_of_the_surroundings() -> None:
    values = np.full((9, 9, 9), 300.0, np.float32)
    inside = np.zeros(values.shape, bool)
    inside[3:6, 3:6, 3:6] = True
    values[inside] = 1500.0
    others = np.zeros(values.shape, bool)
    others[:, :, 7:] = True
    values[others] = 0.0  # another lesion's voxels, whatever they hold, do not count as surroundings
    assert fluid_reason(values, inside, others) is not None
    assert fluid_reason(values, inside) is not None


def test_generated_lesions_are_not_flagged() -> None:
    for seed in range(900_500, 900_506):
        case = case_from_spec(random_spec(seed, matrix=(96,)))
        segmentation = lesions_from_mask(case.labels, 0.5)
        values = sitk.GetArrayViewFromImage(case.image)
        labels = sitk.GetArrayViewFromImage(segmentation.labels)
        for les in segmentation.lesions:
            assert lesion_reasons(Shape(les.volume_ml, les.longest_diameter_mm), values, labels, les.label,
                                  les.bbox_index) == [], (seed, les.label)


def _x_centres(mask: npt.NDArray[np.uint8]) -> list[float]:
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing(SPACING)
    segmentation = lesions_from_mask(image, 0.5)
    labels = sitk.GetArrayViewFromImage(segmentation.labels)
    return [float(np.argwhere(labels == les.label)[:, 2].mean()) for les in segmentation.lesions]


def test_a_flagged_lesion_is_not_counted_malignant_nor_raises_the_series_probability() -> None:
    from pipelines.mri.pipeline import series_summary

    malignant: dict[str, Any] = {"index": 1, "volume_ml": 3.0, "longest_diameter_mm": 20.0,
                                 "malignancy_probability": 0.7, "label": "malignant"}
    sheet: dict[str, Any] = {"index": 2, "volume_ml": 5.0, "longest_diameter_mm": 200.0,
                             "malignancy_probability": 1.0, "label": "malignant"}
    mark_implausible(malignant, [])
    mark_implausible(sheet, [str(sheet_reason(Shape(5.0, 200.0)))])
    assert malignant["label"] == "malignant" and malignant["plausibility"] == []
    assert sheet["label"] == IMPLAUSIBLE and sheet["malignancy_probability"] is None
    assert sheet["classifier_probability"] == 1.0 and sheet["plausibility"][0].startswith("sheet-like shape")
    summary = series_summary([malignant, sheet], 0, 0.5)
    assert (summary["malignant"], summary["implausible"], summary["max_malignancy_probability"]) == (1, 1, 0.7)
    assert summary["finding"] == ("1 lesion(s) classified malignant; 1 implausible as a lesion (shape or fluid "
                                  "signal), for review")
