# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Lesion segmentation: a MONAI 3D U-Net run by sliding window at the model's spacing, then lesions.

The volume is resampled to the spacing the network was trained at, z-scored over its foreground, segmented
by overlapping windows (Gaussian-weighted), and the lesion probability is resampled back onto the series'
own grid. Thresholded, split into connected components and filtered by a minimum volume, it becomes a label
map with one label per lesion (largest first) and each lesion's volume, longest diameter and centroid.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import torch

log = logging.getLogger(__name__)

FOREGROUND_FRACTION = 0.1  # voxels above this fraction of the 99th percentile count as body for the z-score


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything needed to rebuild and run the network; stored with the weights in the manifest."""

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0)  # (x, y, z) the network works at
    roi_size: tuple[int, int, int] = (32, 96, 96)  # sliding window (z, y, x) in voxels at spacing_mm
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    num_res_units: int = 1
    overlap: float = 0.25
    threshold: float = 0.5
    flips: tuple[int, ...] = ()  # test-time augmentation: also predict on the volume mirrored along these axes
    # (1 = rows, 2 = columns of the (z, y, x) array) and average the probabilities

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        return cls(
            spacing_mm=_triple_f(data["spacing_mm"]),
            roi_size=_triple_i(data["roi_size"]),
            channels=tuple(int(c) for c in data["channels"]),
            strides=tuple(_triple_i(s) for s in data["strides"]),
            num_res_units=int(data["num_res_units"]),
            overlap=float(data.get("overlap", 0.25)),
            threshold=float(data.get("threshold", 0.5)),
            flips=tuple(int(a) for a in data.get("flips", ())),
        )


@dataclass(frozen=True)
class Lesion:
    label: int  # value in the label map
    voxels: int
    volume_ml: float
    longest_diameter_mm: float  # the largest distance between two of its voxel centres
    centroid_lps_mm: tuple[float, float, float]
    bbox_index: tuple[int, int, int, int, int, int]  # x, y, z start, then size, on the series grid


@dataclass(frozen=True)
class Segmentation:
    labels: sitk.Image  # UInt16 label map on the series grid: 0 background, 1..n lesions, largest first
    lesions: tuple[Lesion, ...]
    discarded: int  # components smaller than the minimum lesion volume


def build_network(config: SegmenterConfig) -> torch.nn.Module:
    from monai.networks.nets.unet import UNet

    network: torch.nn.Module = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=config.channels,
        strides=config.strides,  # type: ignore[arg-type]  # MONAI accepts a stride per dimension
        num_res_units=config.num_res_units,
        norm="INSTANCE",
    )
    return network


def foreground(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
    """The voxels the z-score is taken over: above 10 % of the 99th percentile (all when that is not positive)."""
    high = float(np.percentile(values, 99))
    mask: npt.NDArray[np.bool_] = values > FOREGROUND_FRACTION * high if high > 0 else np.ones(values.shape, bool)
    return mask


def zscore(array: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Per-volume z-score over the foreground (voxels above 10 % of the 99th percentile)."""
    values = array.astype(np.float32, copy=False)
    body = values[foreground(values)]
    if body.size < 10:
        body = values.ravel()
    mean, std = float(body.mean()), float(body.std())
    result: npt.NDArray[np.float32] = ((values - mean) / (std if std > 1e-6 else 1.0)).astype(np.float32)
    return result


def resample_to_spacing(image: sitk.Image, spacing_mm: tuple[float, float, float],
                        interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of ``spacing_mm`` covering the same extent, same origin and direction."""
    size = [max(1, math.ceil(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing_mm,
                                                             strict=True)]
    # keep the physical extent centred: shift the origin by half the change of the covered length
    shift = [(n * s - m * t) / 2 - (s - t) / 2 for n, s, m, t in zip(image.GetSize(), image.GetSpacing(), size,
                                                                     spacing_mm, strict=True)]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ np.array(shift)
    return sitk.Resample(image, size, sitk.Transform(), interpolator, tuple(float(v) for v in origin),
                         spacing_mm, image.GetDirection(), 0.0, sitk.sitkFloat32)


def resample_like(image: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)


class Segmenter:
    """A loaded network with its config; :meth:`segment` turns a series volume into lesions."""

    def __init__(self, network: torch.nn.Module, config: SegmenterConfig, sw_batch_size: int = 2) -> None:
        self.network = network.eval()
        self.config = config
        self.sw_batch_size = sw_batch_size

    @classmethod
    def load(cls, weights: Path, config: SegmenterConfig) -> Segmenter:
        network = build_network(config)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        return cls(network, config)

    def probability(self, image: sitk.Image) -> sitk.Image:
        """Lesion probability (Float32) on the grid of ``image``."""
        from monai.inferers.utils import sliding_window_inference

        work = resample_to_spacing(image, self.config.spacing_mm)
        array = zscore(sitk.GetArrayViewFromImage(work))
        tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
        views: list[tuple[int, ...]] = [(), *[(axis + 2,) for axis in self.config.flips]]
        total: torch.Tensor | None = None
        with torch.inference_mode():
            for dims in views:
                view = torch.flip(tensor, dims) if dims else tensor
                logits = sliding_window_inference(
                    view, self.config.roi_size, self.sw_batch_size, self.network, overlap=self.config.overlap,
                    mode="gaussian", padding_mode="replicate",
                )
                assert isinstance(logits, torch.Tensor)
                prob_view = torch.sigmoid(logits)
                prob_view = torch.flip(prob_view, dims) if dims else prob_view
                total = prob_view if total is None else total + prob_view
        assert total is not None
        prob = (total / len(views))[0, 0].numpy()
        prob_image = sitk.GetImageFromArray(prob.astype(np.float32))
        prob_image.CopyInformation(work)
        return resample_like(prob_image, image)

    def segment(self, image: sitk.Image, min_lesion_ml: float) -> Segmentation:
        return lesions_from_probability(self.probability(image), self.config.threshold, min_lesion_ml)


def lesions_from_probability(probability: sitk.Image, threshold: float, min_lesion_ml: float) -> Segmentation:
    """Threshold, connected components (face-connected), minimum volume; labels ordered by size."""
    binary = sitk.BinaryThreshold(probability, lowerThreshold=threshold, upperThreshold=1e9, insideValue=1,
                                  outsideValue=0)
    return lesions_from_mask(binary, min_lesion_ml)


def lesions_from_mask(mask: sitk.Image, min_lesion_ml: float) -> Segmentation:
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    components = sitk.ConnectedComponent(sitk.Cast(mask > 0, sitk.sitkUInt8), False)
    total = int(sitk.GetArrayViewFromImage(components).max())
    min_voxels = max(1, math.ceil(min_lesion_ml / voxel_ml - 1e-9))
    labels = sitk.RelabelComponent(components, minimumObjectSize=min_voxels, sortByObjectSize=True)
    labels = sitk.Cast(labels, sitk.sitkUInt16)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    array = sitk.GetArrayViewFromImage(labels)
    lesions = []
    for label in sorted(stats.GetLabels()):
        bbox = stats.GetBoundingBox(label)
        x, y, z, sx, sy, sz = (int(v) for v in bbox)
        region = array[z:z + sz, y:y + sy, x:x + sx] == label
        lesions.append(
            Lesion(
                label=int(label),
                voxels=int(stats.GetNumberOfPixels(label)),
                volume_ml=float(stats.GetPhysicalSize(label)) / 1000.0,
                longest_diameter_mm=longest_diameter_mm(region, labels, (x, y, z)),
                centroid_lps_mm=_triple_f(stats.GetCentroid(label)),
                bbox_index=(x, y, z, sx, sy, sz),
            )
        )
    return Segmentation(labels, tuple(lesions), total - len(lesions))


def longest_diameter_mm(region: npt.NDArray[np.bool_], grid: sitk.Image, offset: tuple[int, int, int]) -> float:
    """Largest distance (mm) between two voxel centres of a lesion: the maximum over its convex hull's
    vertices, so the cost grows with the hull, not with the lesion's voxel count squared."""
    from scipy.spatial import ConvexHull, QhullError

    zyx = np.argwhere(region)
    if len(zyx) < 2:
        return 0.0
    index = zyx[:, ::-1] + np.array(offset)  # (x, y, z) on the full grid
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    points = (index * np.array(grid.GetSpacing())) @ direction.T + np.array(grid.GetOrigin())
    try:
        hull = points[ConvexHull(points, qhull_options="QJ").vertices] if len(points) > 4 else points
    except QhullError:
        hull = points
    if len(hull) > 4000:
        hull = hull[np.linspace(0, len(hull) - 1, 4000).astype(int)]
    diffs = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diffs**2).sum(-1)).max())


def dice(predicted: npt.NDArray[Any], truth: npt.NDArray[Any]) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    p, t = predicted > 0, truth > 0
    denominator = int(p.sum()) + int(t.sum())
    return 1.0 if denominator == 0 else 2.0 * int((p & t).sum()) / denominator


def _triple_f(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _triple_i(values: Any) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in values)
    return (a, b, c)
