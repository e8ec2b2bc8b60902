"""Segmentation post-processing and plumbing: lesions from masks, resampling, normalisation, inference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pipelines.mri.segmentation import (
    Segmenter,
    SegmenterConfig,
    build_network,
    dice,
    lesions_from_mask,
    lesions_from_probability,
    resample_like,
    resample_to_spacing,
    zscore,
)


def image_of(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
             origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius_vox: float) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_vox**2).astype(np.uint8)


def test_lesions_have_volume_diameter_and_centroid_in_physical_units() -> None:
    mask = ball((40, 60, 60), (20, 30, 30), 10)  # radius 10 voxels of 0.8 mm
    mask |= ball((40, 60, 60), (8, 8, 8), 2)  # a small blob: 33 voxels, 0.017 ml
    image = image_of(mask, spacing=(0.8, 0.8, 0.8), origin=(-10.0, 5.0, 2.0))
    result = lesions_from_mask(image, min_lesion_ml=0.05)
    assert result.discarded == 1
    (lesion,) = result.lesions
    expected_ml = 4 / 3 * np.pi * 8.0**3 / 1000
    assert lesion.volume_ml == pytest.approx(expected_ml, rel=0.03)
    assert lesion.longest_diameter_mm == pytest.approx(16.0, abs=0.9)
    assert lesion.centroid_lps_mm == pytest.approx((-10 + 24.0, 5 + 24.0, 2 + 16.0), abs=0.01)
    labels = sitk.GetArrayFromImage(result.labels)
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1}


def test_lesions_are_labelled_largest_first() -> None:
    mask = ball((30, 80, 80), (15, 20, 20), 4) | ball((30, 80, 80), (15, 55, 55), 9)
    result = lesions_from_mask(image_of(mask), min_lesion_ml=0.01)
    assert [les.label for les in result.lesions] == [1, 2]
    assert result.lesions[0].voxels > result.lesions[1].voxels
    assert result.lesions[0].centroid_lps_mm[0] == pytest.approx(55, abs=0.1)


def test_probability_threshold_splits_lesions() -> None:
    prob = ball((20, 40, 40), (10, 20, 20), 6).astype(np.float32) * 0.7
    assert len(lesions_from_probability(image_of(prob), 0.5, 0.01).lesions) == 1
    assert len(lesions_from_probability(image_of(prob), 0.8, 0.01).lesions) == 0


def test_resampling_keeps_the_physical_extent_and_comes_back_to_the_grid() -> None:
    array = np.zeros((12, 50, 40), dtype=np.float32)
    array[4:8, 10:30, 10:30] = 100
    image = image_of(array, spacing=(0.9, 0.9, 3.5), origin=(1.0, 2.0, 3.0))
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # a permuted, still orthonormal frame
    image.SetDirection(direction)
    coarse = resample_to_spacing(image, (1.5, 1.5, 3.0))
    assert coarse.GetSize() == (24, 30, 14)
    assert coarse.GetDirection() == direction

    def centre(img: sitk.Image) -> np.ndarray:
        size = np.array(img.GetSize()) - 1
        return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in size / 2)))

    assert centre(coarse) == pytest.approx(centre(image), abs=1e-6)
    back = resample_like(coarse, image)
    assert back.GetSize() == image.GetSize()
    recovered = sitk.GetArrayFromImage(back)
    assert abs(float(recovered.sum()) - float(array.sum())) / float(array.sum()) < 0.05


def test_zscore_uses_the_foreground() -> None:
    rng = np.random.default_rng(0)
    array = np.zeros((10, 40, 40), dtype=np.float32)
    array[:, 10:30, 10:30] = rng.normal(500, 50, (10, 20, 20))
    z = zscore(array)
    body = z[:, 10:30, 10:30]
    assert body.mean() == pytest.approx(0, abs=1e-3) and body.std() == pytest.approx(1, abs=1e-3)
    assert z[0, 0, 0] == pytest.approx(-10, abs=0.5)  # air well below the body


def test_dice() -> None:
    a = np.zeros((4, 4), dtype=np.uint8)
    b = np.zeros((4, 4), dtype=np.uint8)
    assert dice(a, b) == 1.0
    a[0, :2] = 1
    b[0, 1:3] = 2
    assert dice(a, b) == pytest.approx(0.5)


def test_config_round_trip_and_untrained_network_runs_on_an_odd_sized_volume() -> None:
    config = SegmenterConfig(roi_size=(8, 32, 32), channels=(4, 8, 16, 16))
    assert SegmenterConfig.from_dict(config.as_dict()) == config
    torch.manual_seed(0)
    segmenter = Segmenter(build_network(config), config)
    rng = np.random.default_rng(1)
    image = image_of(rng.normal(100, 10, (7, 37, 29)).astype(np.float32), spacing=(1.1, 1.3, 2.7))
    prob = segmenter.probability(image)
    assert prob.GetSize() == image.GetSize() and prob.GetSpacing() == image.GetSpacing()
    values = sitk.GetArrayFromImage(prob)
    assert values.min() >= 0 and values.max() <= 1


def test_mirrored_predictions_are_averaged() -> None:
    config = SegmenterConfig(roi_size=(8, 32, 32), channels=(4, 8, 16, 16), flips=(2,))
    assert SegmenterConfig.from_dict(config.as_dict()).flips == (2,)
    torch.manual_seed(0)
    network = build_network(config)
    rng = np.random.default_rng(2)
    image = image_of(rng.normal(100, 10, (8, 32, 32)).astype(np.float32), spacing=(1.5, 1.5, 3.0))
    plain = sitk.GetArrayFromImage(Segmenter(network, SegmenterConfig(roi_size=(8, 32, 32),
                                                                      channels=(4, 8, 16, 16))).probability(image))
    averaged = sitk.GetArrayFromImage(Segmenter(network, config).probability(image))
    mirrored = image_of(sitk.GetArrayFromImage(image)[:, :, ::-1].copy(), spacing=(1.5, 1.5, 3.0))
    plain_mirrored = sitk.GetArrayFromImage(Segmenter(network, SegmenterConfig(
        roi_size=(8, 32, 32), channels=(4, 8, 16, 16))).probability(mirrored))[:, :, ::-1]
    assert np.allclose(averaged, (plain + plain_mirrored) / 2, atol=1e-5)
