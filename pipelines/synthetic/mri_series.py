"""Generated MR series as real DICOM files: correct geometry tags, noise, bias field, anatomy-like background.

Every UID derives from the seed, so the same seed writes the same series. Lesions are placed with their
ground truth (mask and label) returned to the caller.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

UID_ROOT = "1.2.826.0.1.3680043.10.1363."  # OncoAgent synthetic-data root (generated data only)


def synthetic_uid(*parts: object) -> str:
    """A deterministic UID under our root from any parts (max 64 characters)."""
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest(), 16)
    return (UID_ROOT + str(digest))[:64].rstrip(".")


@dataclass(frozen=True)
class MRSeriesSpec:
    rows: int = 128
    columns: int = 128
    slices: int = 24
    pixel_spacing_mm: float = 1.5
    slice_thickness_mm: float = 3.0
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # axial
    series_description: str = "AX T2 SYNTHETIC"
    lesions: int = 1
    seed: int = 0


@dataclass
class MRSeries:
    folder: Path
    files: list[Path]
    volume: np.ndarray  # (slices, rows, columns) as stored
    lesion_mask: np.ndarray  # same shape, 0 = background, i = lesion i
    study_uid: str
    series_uid: str
    lesion_labels: list[str] = field(default_factory=list)


def write_mr_series(folder: Path, spec: MRSeriesSpec = MRSeriesSpec()) -> MRSeries:
    rng = np.random.default_rng(spec.seed)
    volume, mask, labels = _phantom(spec, rng)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = synthetic_uid("study", spec.seed)
    series_uid = synthetic_uid("series", spec.seed, spec.series_description)
    frame_uid = synthetic_uid("frame", spec.seed)
    iop = np.array(spec.orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    origin = -0.5 * np.array(
        [spec.columns * spec.pixel_spacing_mm, spec.rows * spec.pixel_spacing_mm, spec.slices * spec.slice_thickness_mm]
    )
    files = []
    for k in range(spec.slices):
        position = origin[0] * row_dir + origin[1] * col_dir + (origin[2] + k * spec.slice_thickness_mm) * normal
        ds = _mr_dataset(spec, volume[k], k, position, study_uid, series_uid, frame_uid)
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return MRSeries(folder, files, volume, mask, study_uid, series_uid, labels)


def _phantom(spec: MRSeriesSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, spec.slices), np.linspace(-1, 1, spec.rows), np.linspace(-1, 1, spec.columns), indexing="ij"
    )
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 + (z / 1.2) ** 2 <= 1
    inner = (x / 0.6) ** 2 + (y / 0.5) ** 2 + (z / 1.1) ** 2 <= 1
    img = np.where(body, 400.0, 5.0) + np.where(inner, 250.0, 0.0)
    img += 60 * np.sin(3 * x + rng.uniform(0, 6)) * np.cos(2 * y) * inner
    mask = np.zeros(img.shape, dtype=np.uint8)
    labels = []
    for i in range(spec.lesions):
        centre = rng.uniform([-0.4, -0.3, -0.5], [0.4, 0.3, 0.5])
        radius = rng.uniform(0.12, 0.22)
        malignant = bool(rng.random() < 0.5)
        r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + ((z - centre[2]) * 0.8) ** 2)
        if malignant:
            angle = np.arctan2(y - centre[1], x - centre[0])
            r = r * (1 + 0.25 * np.sin(5 * angle + rng.uniform(0, 6)))
        lesion = (r <= radius) & inner
        texture = rng.normal(0, 120 if malignant else 25, img.shape)
        img = np.where(lesion, 1100.0 + texture, img)
        mask[lesion] = i + 1
        labels.append("malignant" if malignant else "benign")
    bias = 1 + 0.2 * x + 0.1 * y
    img = img * bias + rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 4095).astype(np.uint16), mask, labels


def _mr_dataset(
    spec: MRSeriesSpec,
    pixels: np.ndarray,
    index: int,
    position: np.ndarray,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
) -> Dataset:
    sop_uid = UID(synthetic_uid("sop", series_uid, index))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientName = f"SYNTHETIC^MR{spec.seed}"
    ds.PatientID = f"SYN-MR-{spec.seed:04d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"SYN{spec.seed:06d}"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.Manufacturer = "OncoAgent synthetic"
    ds.SeriesNumber = 1
    ds.SeriesDescription = spec.series_description
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 90
    ds.RepetitionTime = 4000
    ds.MagneticFieldStrength = 3
    ds.ImagesInAcquisition = spec.slices
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in spec.orientation]
    ds.SliceThickness = spec.slice_thickness_mm
    ds.SpacingBetweenSlices = spec.slice_thickness_mm
    ds.SliceLocation = round(float(np.dot(position, np.cross(spec.orientation[:3], spec.orientation[3:]))), 4)
    ds.PixelSpacing = [spec.pixel_spacing_mm, spec.pixel_spacing_mm]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds
