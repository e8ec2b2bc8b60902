# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Training cases: a volume, its lesion label map and the lesions' labels, from a folder or generated.

A case folder (what users bring to ``oncoagent train``) holds one sub-folder per case with ``image.*`` and
``mask.*`` in any format SimpleITK reads (NIfTI, NRRD, MHA), the mask on the image's grid with one integer
per lesion (0 background). ``labels.csv`` beside the sub-folders names each lesion's class:
``case,lesion,label`` with label ``benign`` or ``malignant``. Segmentation needs only the masks.

Generated cases come from :mod:`pipelines.synthetic.mri_series`, in memory, from a seed: the same seed gives
the same case, so training, validation and test sets are told apart by their seed ranges.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import InputError
from pipelines.synthetic.mri_series import Label, MRSeriesSpec, render_phantom, volume_geometry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LABELS_FILE = "labels.csv"
CLASSES: tuple[Label, Label] = ("benign", "malignant")


@dataclass(frozen=True)
class Case:
    case_id: str
    image: sitk.Image  # Float32, LPS
    labels: sitk.Image  # UInt16 lesion label map on the image's grid
    lesion_classes: dict[int, str] = field(default_factory=dict)  # lesion label -> benign | malignant


def random_spec(seed: int, lesions: tuple[int, int] = (1, 3), matrix: tuple[int, ...] = (192, 224, 256),
                slices_mm: tuple[float, float] = (110.0, 190.0)) -> MRSeriesSpec:
    """A plausible axial acquisition for ``seed``: matrix, field of view, slice thickness, lesion count."""
    rng = np.random.default_rng([seed, 7919])
    rows = int(rng.choice(matrix))
    fov_mm = float(rng.uniform(330, 420))
    thickness = float(rng.choice([2.5, 3.0, 3.0, 3.5, 4.0]))
    slices = max(8, round(float(rng.uniform(*slices_mm)) / thickness))
    return MRSeriesSpec(
        rows=rows, columns=rows, slices=slices, pixel_spacing_mm=round(fov_mm / rows, 4),
        slice_thickness_mm=thickness, lesions=int(rng.integers(lesions[0], lesions[1] + 1)), seed=seed,
    )


def case_from_spec(spec: MRSeriesSpec, case_id: str | None = None) -> Case:
    """The generated series of ``spec`` as a case, on exactly the grid its DICOM files describe."""
    volume, mask, truths = render_phantom(spec)
    origin, direction = volume_geometry(spec)
    spacing = (spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_thickness_mm)
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    labels = sitk.GetImageFromArray(mask.astype(np.uint16))
    for img in (image, labels):
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection(direction)
    classes: dict[int, str] = {t.index: t.label for t in truths if t.voxels > 0}
    return Case(case_id or f"gen-{spec.seed}", image, labels, classes)


def generated_cases(seeds: Iterable[int], **spec_kwargs: object) -> Iterator[Case]:
    for seed in seeds:
        yield case_from_spec(random_spec(seed, **spec_kwargs))  # type: ignore[arg-type]


def read_case_folder(root: Path) -> list[Case]:
    """Every case under ``root``; InputError when the folder does not follow the layout."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of cases")
    classes = _read_labels(root / LABELS_FILE) if (root / LABELS_FILE).exists() else {}
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image_path, mask_path = _find(folder, "image"), _find(folder, "mask")
        if image_path is None or mask_path is None:
            log.warning("%s: no image.* and mask.* (%s), skipped", folder.name, "/".join(IMAGE_SUFFIXES))
            continue
        image = sitk.Cast(sitk.ReadImage(str(image_path)), sitk.sitkFloat32)
        labels = sitk.Cast(sitk.ReadImage(str(mask_path)), sitk.sitkUInt16)
        if image.GetSize() != labels.GetSize() or not np.allclose(image.GetSpacing(), labels.GetSpacing(),
                                                                   atol=1e-3):
            raise InputError(f"{folder.name}: mask grid {labels.GetSize()} differs from image grid {image.GetSize()}")
        labels.CopyInformation(image)
        cases.append(Case(folder.name, image, labels, classes.get(folder.name, {})))
    if not cases:
        raise InputError(f"{root}: no case folders with image.* and mask.*")
    return cases


def write_case_folder(cases: Iterable[Case], root: Path) -> Path:
    """Write cases in the layout :func:`read_case_folder` reads (NIfTI, gzip) with ``labels.csv``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        folder = root / case.case_id
        folder.mkdir(exist_ok=True)
        sitk.WriteImage(case.image, str(folder / "image.nii.gz"), useCompression=True)
        sitk.WriteImage(case.labels, str(folder / "mask.nii.gz"), useCompression=True)
        rows += [(case.case_id, lesion, label) for lesion, label in sorted(case.lesion_classes.items())]
    with (root / LABELS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "lesion", "label"])
        writer.writerows(rows)
    return root


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_labels(path: Path) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                case, lesion, label = row["case"], int(row["lesion"]), row["label"].strip().lower()
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path.name} line {line}: needs columns case,lesion,label ({exc})") from exc
            if label not in CLASSES:
                raise InputError(f"{path.name} line {line}: label {label!r} is not one of {', '.join(CLASSES)}")
            out.setdefault(case, {})[lesion] = label
    return out
