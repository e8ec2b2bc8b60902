"""Generated MR series as real DICOM files: correct geometry tags, noise, bias field, anatomy-like background.

The phantom is an abdomen on a T2-weighted-like contrast: body outline, subcutaneous fat, a muscle wall,
liver, spleen, kidneys, spine with a bright spinal canal, aorta and cava as flow voids, liver vessels and
bowel loops with gas. Lesions sit in the liver. Each lesion has a latent aggressiveness ``a`` in [0, 1]:
margin irregularity (lobulation, spicules, blur) and internal heterogeneity (texture, necrotic core) grow
with it, each through its own noise, so no single feature reveals it. Benign lesions draw ``a`` from
Beta(2, 8), malignant ones from Beta(8, 2): the classes mostly look different (smooth and homogeneous vs
irregular and heterogeneous) but overlap, so that even a perfect classifier errs on a few percent. A smooth
multiplicative bias field, a random receiver gain, a slice profile and Rician noise come on top; values are
stored as 12-bit unsigned integers.

Everything derives from the seed: the same spec writes the same series, UIDs included. The ground truth
(label map and one :class:`LesionTruth` per lesion) is returned to the caller. :func:`write_mr_series` writes
single-frame MR Image Storage files, :func:`write_enhanced_mr_series` one Enhanced MR multi-frame file.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)
from scipy import ndimage

UID_NAMESPACE = uuid.UUID("5f0c6f4e-3b7a-5d8e-9c1a-0c0a6e2d7b11")  # generated data only
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
MAX_STORED = 4095  # 12 bits stored

Label = Literal["benign", "malignant"]
LABELS: tuple[Label, Label] = ("benign", "malignant")
FloatArray = npt.NDArray[np.float32]


def synthetic_uid(*parts: object) -> str:
    """A deterministic UUID-derived UID (``2.25.<uuid5>``, PS3.5 B.2) from any parts: no registered root needed."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '/'.join(map(str, parts))).int}"


@dataclass(frozen=True)
class MRSeriesSpec:
    rows: int = 128
    columns: int = 128
    slices: int = 24
    pixel_spacing_mm: float = 1.5
    slice_thickness_mm: float = 3.0
    orientation: tuple[float, ...] = AXIAL  # ImageOrientationPatient: row direction, column direction
    series_description: str = "AX T2 SYNTHETIC"
    lesions: int = 1
    seed: int = 0
    labels: tuple[Label, ...] = ()  # force the lesions' labels (one per lesion); random when empty
    malignant_fraction: float = 0.5
    header: tuple[tuple[str, object], ...] = ()  # (keyword, value) written over the defaults; value None removes
    # the attribute (vendor-style headers: pipelines.synthetic.vendor_series)


@dataclass(frozen=True)
class LesionTruth:
    index: int  # value in the label map
    label: Label
    aggressiveness: float  # latent 0..1 that drives margin irregularity and heterogeneity
    centre_ijk: tuple[float, float, float]  # (slice, row, column), fractional voxel index
    radius_mm: float  # mean radius before the margin is perturbed
    voxels: int


@dataclass
class MRSeries:
    folder: Path
    files: list[Path]
    volume: npt.NDArray[np.uint16]  # (slices, rows, columns) as stored, slice k in file k
    lesion_mask: npt.NDArray[np.uint8]  # same shape, 0 = background, i = lesion i
    study_uid: str
    series_uid: str
    lesion_labels: list[str] = field(default_factory=list)
    lesions: list[LesionTruth] = field(default_factory=list)
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (column, row, slice) = x, y, z


# ----------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Grid:
    """Voxel centres in the image frame (mm): z along slices, y along rows, x along columns."""

    shape: tuple[int, int, int]  # (z, y, x)
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    first_mm: tuple[float, float, float]  # centre of voxel (0, 0, 0), (z, y, x)

    def axis(self, dim: int) -> FloatArray:
        return (self.first_mm[dim] + self.spacing_mm[dim] * np.arange(self.shape[dim])).astype(np.float32)

    def coords(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Broadcastable coordinate arrays z (n,1,1), y (1,n,1), x (1,1,n)."""
        return (
            self.axis(0)[:, None, None],
            self.axis(1)[None, :, None],
            self.axis(2)[None, None, :],
        )


def _soft(signed_mm: FloatArray, width_mm: float) -> FloatArray:
    """Partial-volume weight from a signed distance (positive inside): 0.5 on the boundary."""
    result: FloatArray = (0.5 * (1.0 + np.tanh(signed_mm / np.float32(max(width_mm, 1e-3))))).astype(np.float32)
    return result


def _ellipse_inside_mm(
    coords: list[FloatArray], centre: tuple[float, ...], semi_axes: tuple[float, ...]
) -> FloatArray:
    """Approximate signed distance to an axis-aligned ellipsoid (positive inside), in mm."""
    rho2: FloatArray | float = 0.0
    for c, x0, a in zip(coords, centre, semi_axes, strict=True):
        rho2 = rho2 + ((c - np.float32(x0)) / np.float32(a)) ** 2
    rho = np.sqrt(rho2)
    result: FloatArray = ((1.0 - rho) * np.float32(min(semi_axes))).astype(np.float32)
    return result


def _blend(img: FloatArray, weight: FloatArray, value: FloatArray | float) -> FloatArray:
    return img + weight * (value - img)


# ----------------------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Anatomy:
    """Random but plausible abdomen dimensions (mm, image frame centred on the field of view)."""

    fov_mm: tuple[float, float, float]  # (z, y, x)
    body: tuple[float, float]  # semi-axes (y, x)
    fat_mm: float
    muscle_mm: float
    liver_centre: tuple[float, float, float]
    liver_axes: tuple[float, float, float]
    seed: int

    @classmethod
    def random(cls, fov_mm: tuple[float, float, float], rng: np.random.Generator) -> _Anatomy:
        fz, fy, fx = fov_mm
        bx = 0.44 * fx * rng.uniform(0.92, 1.04)
        by = 0.34 * fy * rng.uniform(0.9, 1.08)
        liver_axes = (0.42 * fz * rng.uniform(0.9, 1.1), 0.58 * by * rng.uniform(0.9, 1.05),
                      0.42 * bx * rng.uniform(0.9, 1.05))
        liver_centre = (0.06 * fz * rng.uniform(-1, 1), -0.12 * by + rng.uniform(-3, 3), -0.36 * bx)
        return cls(fov_mm, (by, bx), rng.uniform(0.05, 0.11) * bx, rng.uniform(0.03, 0.05) * bx, liver_centre,
                   liver_axes, int(rng.integers(2**31)))

    def render(self, grid: _Grid) -> FloatArray:
        """T2-like signal of the anatomy (before bias field, gain and noise)."""
        rng = np.random.default_rng(self.seed)
        z, y, x = grid.coords()
        by, bx = self.body
        fz = self.fov_mm[0]
        shape = grid.shape
        # cross-section of the trunk as a superellipse, constant along z
        p = 2.4
        rho = (np.abs(x / bx) ** p + np.abs(y / by) ** p) ** (1 / p)
        to_skin = (1.0 - rho) * min(bx, by)  # approximately mm inside the skin
        img: FloatArray = np.broadcast_to(np.float32(8.0), shape).astype(np.float32)
        img = _blend(img, np.broadcast_to(_soft(to_skin, 0.7), shape), 700.0)  # fat everywhere inside
        wall = _soft(to_skin - self.fat_mm, 0.8)
        img = _blend(img, np.broadcast_to(wall, shape), 280.0)  # muscle wall
        cavity = _soft(to_skin - self.fat_mm - self.muscle_mm, 0.8)
        texture = _smooth_noise(shape, grid.spacing_mm, 12.0, rng)
        img = _blend(img, np.broadcast_to(cavity, shape), 380.0 * (1 + 0.06 * texture))  # mesentery, fat
        # bowel loops: blobs of mixed signal with gas pockets, anterior left
        for _ in range(int(rng.integers(3, 6))):
            centre = (rng.uniform(-0.4, 0.4) * fz, rng.uniform(-0.7, -0.1) * by, rng.uniform(0.0, 0.6) * bx)
            axes = (rng.uniform(15, 40), rng.uniform(10, 22), rng.uniform(10, 22))
            inside = _ellipse_inside_mm([z, y, x], centre, axes)
            loop = _soft(inside, 1.0) * cavity
            img = _blend(img, loop, 230.0)  # the bowel wall, darker than its content
            content = _soft(inside - 2.5, 0.8) * cavity
            img = _blend(img, content, float(rng.uniform(260, 520)) * (1 + 0.15 * texture))
            gas_centre = (centre[0], centre[1] - 0.5 * axes[1], centre[2])
            gas = _soft(_ellipse_inside_mm([z, y, x], gas_centre, (axes[0] * 0.6, 4.0, axes[2] * 0.5)), 0.6)
            img = _blend(img, gas * content, 30.0)
        # organs
        liver = _soft(_ellipse_inside_mm([z, y, x], self.liver_centre, self.liver_axes), 1.0) * cavity
        img = _blend(img, liver, 330.0 * (1 + 0.04 * texture))
        spleen_c = (0.1 * fz, 0.2 * by, 0.55 * bx)
        spleen = _soft(_ellipse_inside_mm([z, y, x], spleen_c, (0.3 * fz, 0.26 * by, 0.17 * bx)), 1.0) * cavity
        img = _blend(img, spleen, 560.0 * (1 + 0.03 * texture))
        for side in (-1.0, 1.0):
            kidney_c = (-0.12 * fz, 0.42 * by, side * 0.33 * bx)
            kidney = _ellipse_inside_mm([z, y, x], kidney_c, (0.22 * fz, 0.17 * by, 0.1 * bx))
            img = _blend(img, _soft(kidney, 0.8), 520.0)
            img = _blend(img, _soft(kidney - 0.45 * 0.1 * bx, 0.8), 640.0)  # medulla / sinus
        # spine, canal, great vessels: tubes along z
        vertebra = _ellipse_inside_mm([y, x], (0.62 * by, 0.0), (0.13 * by, 0.1 * bx))
        img = _blend(img, np.broadcast_to(_soft(vertebra, 0.7), shape), 200.0)  # cortex
        img = _blend(img, np.broadcast_to(_soft(vertebra - 2.5, 0.7), shape), 440.0 * (1 + 0.05 * texture))
        canal = _ellipse_inside_mm([y, x], (0.86 * by, 0.0), (0.05 * by, 0.045 * bx))
        img = _blend(img, np.broadcast_to(_soft(canal, 0.6), shape), 1100.0)
        aorta = _ellipse_inside_mm([y, x], (0.42 * by, 0.06 * bx), (0.05 * by, 0.045 * bx))
        img = _blend(img, np.broadcast_to(_soft(aorta, 0.6), shape), 60.0)
        cava = _ellipse_inside_mm([y, x], (0.36 * by, -0.11 * bx), (0.06 * by, 0.05 * bx))
        img = _blend(img, np.broadcast_to(_soft(cava, 0.6), shape), 90.0)
        # liver vessels: straight tube segments, dark flow voids and a few bright ducts
        for k in range(int(rng.integers(4, 8))):
            radius = rng.uniform(1.2, 3.0) if k % 3 else rng.uniform(0.8, 1.6)
            value = 140.0 if k % 3 else 720.0
            start = np.array(self.liver_centre) + rng.uniform(-0.6, 0.6, 3) * np.array(self.liver_axes)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            tube = _tube_inside_mm([z, y, x], start, direction, radius, 0.7 * max(self.liver_axes))
            img = _blend(img, _soft(tube, 0.5) * liver, value)
        return img

    def lesion_site(self, radius_mm: float, rng: np.random.Generator) -> tuple[float, float, float]:
        """A centre in the liver where a lesion of this radius fits (falls back to the liver centre)."""
        for _ in range(200):
            u = rng.uniform(-1, 1, 3)
            if float(np.sum(u**2)) > 1:
                continue
            centre = tuple(c + 0.95 * ui * max(a - radius_mm * 1.3, 0.0)
                           for c, ui, a in zip(self.liver_centre, u, self.liver_axes, strict=True))
            return (float(centre[0]), float(centre[1]), float(centre[2]))
        return self.liver_centre


def _tube_inside_mm(
    coords: list[FloatArray], start: npt.NDArray[np.float64], direction: npt.NDArray[np.float64], radius: float,
    half_length: float,
) -> FloatArray:
    rel = [c - np.float32(s) for c, s in zip(coords, start, strict=True)]
    along = rel[0] * direction[0] + rel[1] * direction[1] + rel[2] * direction[2]
    perp2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2
    inside = radius - np.sqrt(np.maximum(perp2, 0.0))
    result: FloatArray = np.minimum(inside, half_length - np.abs(along)).astype(np.float32)
    return result


def _smooth_noise(
    shape: tuple[int, ...], spacing_mm: tuple[float, ...], scale_mm: float, rng: np.random.Generator
) -> FloatArray:
    """Gaussian-correlated noise with unit standard deviation; generated coarse and upsampled for speed."""
    factor = max(1, int(scale_mm / (2 * min(spacing_mm))))
    coarse_shape = tuple(max(2, math.ceil(n / factor) + 1) for n in shape)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    sigma = [scale_mm / (s * factor) for s in spacing_mm]
    coarse = ndimage.gaussian_filter(coarse, sigma, mode="wrap")
    zoomed: FloatArray = ndimage.zoom(coarse, [factor] * len(shape), order=1)[tuple(slice(0, n) for n in shape)]
    std = float(zoomed.std())
    result: FloatArray = ((zoomed - zoomed.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
    return result


# ----------------------------------------------------------------------------------------- lesions


@dataclass(frozen=True)
class _Lesion:
    label: Label
    aggressiveness: float
    centre_mm: tuple[float, float, float]  # (z, y, x)
    radius_mm: float
    rotation: npt.NDArray[np.float64]  # 3x3, image frame -> lesion frame
    axes: tuple[float, float, float]  # relative semi-axes in the lesion frame
    lobes: tuple[tuple[float, float, float, tuple[float, float, float]], ...]  # weight, freq, phase, dir
    amplitude: float
    spikes: tuple[tuple[float, float, float], ...]  # directions of spicules
    spike_length: float
    edge_mm: float
    contrast: float
    heterogeneity: float
    texture_mm: float
    necrosis: tuple[float, float] | None  # (relative core radius, signal factor)
    seed: int

    @classmethod
    def random(cls, label: Label, anatomy: _Anatomy, rng: np.random.Generator,
               avoid: list[_Lesion]) -> _Lesion:
        a = float(rng.beta(2, 8) if label == "benign" else rng.beta(8, 2))
        # each appearance channel sees the latent through its own noise: no single feature reveals it
        a_margin, a_texture, a_edge = (float(np.clip(a + rng.normal(0, sd), 0, 1)) for sd in (0.12, 0.12, 0.2))
        radius = float(rng.uniform(7.0, 17.0) if label == "benign" else rng.uniform(8.5, 20.0))
        radius = min(radius, 0.4 * min(anatomy.liver_axes))
        centre = anatomy.lesion_site(radius, rng)
        for _ in range(50):
            if all(math.dist(centre, o.centre_mm) > (radius + o.radius_mm) * 1.5 + 4 for o in avoid):
                break
            centre = anatomy.lesion_site(radius, rng)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        n_lobes = 8
        freq = 1.0 + 4.0 * a_margin
        lobes = tuple(
            (float(rng.normal()), float(freq * rng.uniform(0.7, 1.3)), float(rng.uniform(0, 2 * np.pi)),
             _unit(rng))
            for _ in range(n_lobes)
        )
        n_spikes = int(rng.poisson(5 * a_margin**2)) if a_margin > 0.35 else 0
        necrosis = None
        if rng.random() < a_texture**2:
            necrosis = (float(rng.uniform(0.3, 0.55)),
                        float(rng.uniform(1.2, 1.5) if rng.random() < 0.6 else rng.uniform(0.7, 0.85)))
        return cls(
            label=label,
            aggressiveness=a,
            centre_mm=centre,
            radius_mm=radius,
            rotation=q,
            axes=(1.0, float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.7, 1.0))),
            lobes=lobes,
            amplitude=float((0.025 + 0.2 * a_margin**1.3) * rng.uniform(0.8, 1.2)),
            spikes=tuple(_unit(rng) for _ in range(n_spikes)),
            spike_length=float(rng.uniform(0.12, 0.25)),
            edge_mm=float(0.3 + 0.45 * a_edge * rng.uniform(0.7, 1.3)),
            contrast=float(rng.uniform(1.7, 2.6)),
            heterogeneity=float((0.02 + 0.2 * a_texture) * rng.uniform(0.75, 1.25)),
            texture_mm=float(1.5 + 3.0 * a_texture * rng.uniform(0.7, 1.3)),
            necrosis=necrosis,
            seed=int(rng.integers(2**31)),
        )

    def extent_mm(self) -> float:
        return self.radius_mm * (1 + 2.5 * self.amplitude + self.spike_length) + 3 * self.edge_mm + 2

    def signed_distance_mm(self, coords: list[FloatArray]) -> FloatArray:
        """Approximate signed distance to the perturbed margin (positive inside)."""
        rel = [c - np.float32(c0) for c, c0 in zip(coords, self.centre_mm, strict=True)]
        local = [
            (self.rotation[0, k] * rel[0] + self.rotation[1, k] * rel[1] + self.rotation[2, k] * rel[2])
            / np.float32(self.axes[k] * self.radius_mm)
            for k in range(3)
        ]
        rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2) + np.float32(1e-6)
        unit = [v / rho for v in local]
        g: FloatArray | float = 0.0
        norm = math.sqrt(sum(w * w for w, *_ in self.lobes) / 2) or 1.0
        for weight, freq, phase, d in self.lobes:
            t = unit[0] * d[0] + unit[1] * d[1] + unit[2] * d[2]
            g = g + np.float32(weight / norm) * np.cos(np.float32(freq * np.pi) * t + np.float32(phase))
        boundary = 1.0 + self.amplitude * g
        for d in self.spikes:
            t = unit[0] * d[0] + unit[1] * d[1] + unit[2] * d[2]
            boundary = boundary + np.float32(self.spike_length) * np.exp((t - 1.0) / np.float32(0.1))
        boundary = np.maximum(boundary, 0.5)
        scale = self.radius_mm * float(np.mean(self.axes))
        result: FloatArray = ((boundary - rho) * np.float32(scale)).astype(np.float32)
        return result

    def paint(self, img: FloatArray, label_map: npt.NDArray[np.uint8], index: int, grid: _Grid,
              background: float) -> int:
        """Blend the lesion into ``img`` and mark it in ``label_map``; return its voxel count."""
        box = _box(grid, self.centre_mm, self.extent_mm())
        if box is None:
            return 0
        sub = _Grid(
            (box[0].stop - box[0].start, box[1].stop - box[1].start, box[2].stop - box[2].start),
            grid.spacing_mm,
            (grid.first_mm[0] + grid.spacing_mm[0] * box[0].start, grid.first_mm[1] + grid.spacing_mm[1] * box[1].start,
             grid.first_mm[2] + grid.spacing_mm[2] * box[2].start),
        )
        z, y, x = sub.coords()
        sd = self.signed_distance_mm([z, y, x])
        weight = _soft(sd, self.edge_mm)
        rng = np.random.default_rng(self.seed)
        texture = _smooth_noise(sub.shape, sub.spacing_mm, self.texture_mm, rng)
        coarse = _smooth_noise(sub.shape, sub.spacing_mm, 2.5 * self.texture_mm, rng)
        signal = background * self.contrast * (1 + self.heterogeneity * (0.7 * texture + 0.5 * coarse))
        if self.necrosis is not None:
            core_radius, factor = self.necrosis
            core = _soft(sd - (1 - core_radius) * self.radius_mm, 1.5)
            signal = signal * (1 + core * (factor - 1))
        region = img[box]
        img[box] = region + weight * (signal - region)
        inside = (sd >= 0) & (label_map[box] == 0)
        label_map[box][inside] = index
        return int(inside.sum())


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def _box(grid: _Grid, centre_mm: tuple[float, ...], half_mm: float) -> tuple[slice, slice, slice] | None:
    slices = []
    for dim in range(3):
        lo = math.floor((centre_mm[dim] - half_mm - grid.first_mm[dim]) / grid.spacing_mm[dim])
        hi = math.ceil((centre_mm[dim] + half_mm - grid.first_mm[dim]) / grid.spacing_mm[dim]) + 1
        lo, hi = max(lo, 0), min(hi, grid.shape[dim])
        if hi <= lo:
            return None
        slices.append(slice(lo, hi))
    return (slices[0], slices[1], slices[2])


# ----------------------------------------------------------------------------------------- acquisition


def _acquire(img: FloatArray, grid: _Grid, rng: np.random.Generator) -> npt.NDArray[np.uint16]:
    """Slice profile, bias field, receiver gain and Rician noise; 12-bit storage."""
    slice_sigma = 0.35  # in slices: neighbouring slices overlap a little
    if grid.shape[0] > 1:
        img = ndimage.gaussian_filter1d(img, slice_sigma, axis=0, mode="nearest")
    z, y, x = (c / np.float32(max(grid.shape[d] * grid.spacing_mm[d], 1.0) / 2)
               for d, c in enumerate(_centred(grid)))
    coeffs = rng.normal(0, 1, 6)
    log_bias = (0.12 * coeffs[0] * x + 0.12 * coeffs[1] * y + 0.06 * coeffs[2] * z
                + 0.06 * coeffs[3] * x * y - 0.08 * abs(coeffs[4]) * (x**2 + y**2) + 0.04 * coeffs[5] * z**2)
    gain = rng.uniform(0.7, 1.5)
    signal = img * np.exp(log_bias).astype(np.float32) * np.float32(gain)
    snr = rng.uniform(20, 40)
    sigma = np.float32(330.0 * gain / snr)
    real = signal + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    magnitude = np.sqrt(real**2 + imag**2)
    stored: npt.NDArray[np.uint16] = np.clip(np.rint(magnitude), 0, MAX_STORED).astype(np.uint16)
    return stored


def _centred(grid: _Grid) -> tuple[FloatArray, FloatArray, FloatArray]:
    z, y, x = grid.coords()
    return z, y, x


def _labels_for(spec_labels: tuple[Label, ...], count: int, malignant_fraction: float,
                rng: np.random.Generator) -> list[Label]:
    if spec_labels:
        if len(spec_labels) != count:
            raise ValueError(f"{len(spec_labels)} labels given for {count} lesions")
        return list(spec_labels)
    return ["malignant" if rng.random() < malignant_fraction else "benign" for _ in range(count)]


def render_phantom(
    spec: MRSeriesSpec,
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8], list[LesionTruth]]:
    """The stored volume (slices, rows, columns), its label map and the lesions' ground truth."""
    rng = np.random.default_rng(spec.seed)
    spacing = (spec.slice_thickness_mm, spec.pixel_spacing_mm, spec.pixel_spacing_mm)
    shape = (spec.slices, spec.rows, spec.columns)
    fov = tuple(n * s for n, s in zip(shape, spacing, strict=True))
    grid = _Grid(shape, spacing, tuple(-f / 2 + s / 2 for f, s in zip(fov, spacing, strict=True)))  # type: ignore[arg-type]
    anatomy = _Anatomy.random(fov, rng)  # type: ignore[arg-type]
    img = anatomy.render(grid)
    label_map = np.zeros(shape, dtype=np.uint8)
    lesions: list[_Lesion] = []
    truths: list[LesionTruth] = []
    for i, label in enumerate(_labels_for(spec.labels, spec.lesions, spec.malignant_fraction, rng), start=1):
        lesion = _Lesion.random(label, anatomy, rng, lesions)
        lesions.append(lesion)
        voxels = lesion.paint(img, label_map, i, grid, 330.0)
        truths.append(_truth(lesion, i, grid, voxels))
    return _acquire(img, grid, rng), label_map, truths


def _truth(lesion: _Lesion, index: int, grid: _Grid, voxels: int) -> LesionTruth:
    ijk = tuple((c - f) / s for c, f, s in zip(lesion.centre_mm, grid.first_mm, grid.spacing_mm, strict=True))
    return LesionTruth(index, lesion.label, lesion.aggressiveness, ijk, lesion.radius_mm, voxels)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- DICOM


@dataclass(frozen=True)
class _Geometry:
    row_dir: npt.NDArray[np.float64]
    col_dir: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    origin: npt.NDArray[np.float64]

    @classmethod
    def of(cls, spec: MRSeriesSpec) -> _Geometry:
        iop = np.array(spec.orientation, dtype=float)
        row_dir, col_dir = iop[:3], iop[3:]
        normal = np.cross(row_dir, col_dir)
        extent = np.array([spec.columns * spec.pixel_spacing_mm, spec.rows * spec.pixel_spacing_mm,
                           spec.slices * spec.slice_thickness_mm])
        origin = -0.5 * extent[0] * row_dir - 0.5 * extent[1] * col_dir - 0.5 * extent[2] * normal
        return cls(row_dir, col_dir, normal, origin)

    def position(self, k: int, spec: MRSeriesSpec) -> list[float]:
        p = self.origin + k * spec.slice_thickness_mm * self.normal
        return [round(float(v), 4) for v in p]


def volume_geometry(spec: MRSeriesSpec) -> tuple[tuple[float, float, float], tuple[float, ...]]:
    """Origin (first slice's ImagePositionPatient) and row-major direction matrix of the written series, as a
    reader that orders slices along the normal reports them (LPS, SimpleITK convention)."""
    geometry = _Geometry.of(spec)
    origin = geometry.position(0, spec)
    matrix = np.column_stack([geometry.row_dir, geometry.col_dir, geometry.normal])
    return (origin[0], origin[1], origin[2]), tuple(float(v) for v in matrix.ravel())


def write_mr_series(folder: Path, spec: MRSeriesSpec = MRSeriesSpec()) -> MRSeries:
    """Write ``spec`` as one single-frame MR Image Storage file per slice into ``folder``."""
    volume, mask, truths = render_phantom(spec)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = _series_uids(spec)
    geometry = _Geometry.of(spec)
    files = []
    for k in range(spec.slices):
        ds = _mr_dataset(spec, volume[k], k, geometry.position(k, spec), geometry.normal, study_uid, series_uid,
                         frame_uid)
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return MRSeries(folder, files, volume, mask, study_uid, series_uid, [t.label for t in truths], truths,
                    (spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_thickness_mm))


def write_enhanced_mr_series(path: Path, spec: MRSeriesSpec = MRSeriesSpec(),
                             frame_order: list[int] | None = None) -> MRSeries:
    """Write ``spec`` as one Enhanced MR Image Storage (multi-frame) file; ``frame_order`` lists which slice
    each frame holds (default: in order), so tests can store frames out of order."""
    volume, mask, truths = render_phantom(spec)
    order = list(range(spec.slices)) if frame_order is None else list(frame_order)
    if sorted(order) != list(range(spec.slices)):
        raise ValueError("frame_order must be a permutation of the slice indices")
    study_uid, series_uid, frame_uid = _series_uids(spec)
    geometry = _Geometry.of(spec)
    sop_uid = UID(synthetic_uid("sop", series_uid, "enhanced"))
    ds = _base_dataset(spec, sop_uid, EnhancedMRImageStorage, study_uid, series_uid, frame_uid)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "T2"
    ds.ContentQualification = "RESEARCH"
    ds.MRAcquisitionType = "2D"
    ds.NumberOfFrames = spec.slices
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [spec.pixel_spacing_mm, spec.pixel_spacing_mm]
    measures.SliceThickness = spec.slice_thickness_mm
    measures.SpacingBetweenSlices = spec.slice_thickness_mm
    shared.PixelMeasuresSequence = Sequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [float(v) for v in spec.orientation]
    shared.PlaneOrientationSequence = Sequence([plane])
    transform = Dataset()
    transform.RescaleIntercept = 0
    transform.RescaleSlope = 1
    transform.RescaleType = "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = geometry.position(k, spec)
        item.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        item.FrameContentSequence = Sequence([content])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    _pixel_module(ds, spec.rows, spec.columns)
    ds.PixelData = np.ascontiguousarray(volume[order]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return MRSeries(path.parent, [path], volume, mask, study_uid, series_uid, [t.label for t in truths], truths,
                    (spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_thickness_mm))


def _series_uids(spec: MRSeriesSpec) -> tuple[str, str, str]:
    return (
        synthetic_uid("study", spec.seed),
        synthetic_uid("series", spec.seed, spec.series_description),
        synthetic_uid("frame", spec.seed),
    )


def _base_dataset(spec: MRSeriesSpec, sop_uid: UID, sop_class: UID, study_uid: str, series_uid: str,
                  frame_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientName = f"SYNTHETIC^MR{spec.seed}"
    ds.PatientID = f"SYN-MR-{spec.seed:04d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = f"SYN{spec.seed:06d}"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.Manufacturer = "OncoAgent synthetic"
    ds.SeriesNumber = 1
    ds.SeriesDescription = spec.series_description
    ds.BodyPartExamined = "ABDOMEN"
    ds.MagneticFieldStrength = 3
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_uid
    return ds


def _pixel_module(ds: Dataset, rows: int, columns: int) -> None:
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0


def _mr_dataset(
    spec: MRSeriesSpec,
    pixels: npt.NDArray[np.uint16],
    index: int,
    position: list[float],
    normal: npt.NDArray[np.float64],
    study_uid: str,
    series_uid: str,
    frame_uid: str,
) -> Dataset:
    sop_uid = UID(synthetic_uid("sop", series_uid, index))
    ds = _base_dataset(spec, sop_uid, MRImageStorage, study_uid, series_uid, frame_uid)
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 90
    ds.RepetitionTime = 4000
    ds.ImagesInAcquisition = spec.slices
    ds.ImagePositionPatient = position
    ds.ImageOrientationPatient = [float(v) for v in spec.orientation]
    ds.SliceThickness = spec.slice_thickness_mm
    ds.SpacingBetweenSlices = spec.slice_thickness_mm
    ds.SliceLocation = round(float(np.dot(position, normal)), 4)
    ds.PixelSpacing = [spec.pixel_spacing_mm, spec.pixel_spacing_mm]
    _pixel_module(ds, int(pixels.shape[0]), int(pixels.shape[1]))
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    _apply_header(ds, spec.header)
    return ds


def _apply_header(ds: Dataset, header: tuple[tuple[str, object], ...]) -> None:
    for keyword, value in header:
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, list(value) if isinstance(value, tuple) else value)
