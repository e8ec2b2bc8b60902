"""Radiomics features of labelled lesions as a table: extraction from cases, CSV round trip.

The CSV has one row per lesion (``case``, ``lesion``, ``label``, then the features) and a first comment line
with the sha256 of the radiomics parameter file, so a saved table cannot be mixed with other features.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipelines.errors import InputError
from pipelines.mri.cases import Case
from pipelines.mri.classifier import POSITIVE
from pipelines.mri.radiomics import RadiomicsError, RadiomicsExtractor

log = logging.getLogger(__name__)

SHA_PREFIX = "# radiomics_params_sha256="


@dataclass(frozen=True)
class FeatureTable:
    names: tuple[str, ...]
    keys: tuple[tuple[str, int], ...]  # (case, lesion) per row
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.int_]  # 1 malignant, 0 benign
    params_sha256: str

    def __len__(self) -> int:
        return len(self.keys)

    def save_csv(self, path: Path) -> Path:
        with path.open("w", newline="", encoding="utf-8") as handle:
            handle.write(f"{SHA_PREFIX}{self.params_sha256}\n")
            writer = csv.writer(handle)
            writer.writerow(["case", "lesion", "label", *self.names])
            for (case, lesion), label, row in zip(self.keys, self.y, self.x, strict=True):
                writer.writerow([case, lesion, "malignant" if label else "benign", *(repr(float(v)) for v in row)])
        return path

    @classmethod
    def load_csv(cls, path: Path) -> FeatureTable:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline().strip()
            if not first.startswith(SHA_PREFIX):
                raise InputError(f"{path.name}: not a feature table (no {SHA_PREFIX.strip()} line)")
            reader = csv.reader(handle)
            header = next(reader)
            keys, labels, rows = [], [], []
            for row in reader:
                keys.append((row[0], int(row[1])))
                labels.append(1 if row[2] == POSITIVE else 0)
                rows.append([float(v) for v in row[3:]])
        return cls(tuple(header[3:]), tuple(keys), np.array(rows, dtype=np.float64).reshape(len(rows), -1),
                   np.array(labels, dtype=int), first.removeprefix(SHA_PREFIX))


def extract_table(cases: Iterable[Case], extractor: RadiomicsExtractor,
                  progress: Callable[[str], None] = log.info) -> FeatureTable:
    """Features of every labelled lesion in ``cases`` (lesions without a class or voxels are skipped)."""
    names: tuple[str, ...] | None = None
    keys: list[tuple[str, int]] = []
    rows: list[npt.NDArray[np.float64]] = []
    labels: list[int] = []
    for count, case in enumerate(cases, start=1):
        for lesion, label in sorted(case.lesion_classes.items()):
            try:
                vector = extractor.extract(case.image, case.labels, lesion)
            except RadiomicsError as exc:
                log.warning("case %s lesion %d skipped: %s", case.case_id, lesion, exc)
                continue
            if names is None:
                names = vector.names
            elif vector.names != names:
                raise InputError(f"case {case.case_id} lesion {lesion}: feature names differ from the first lesion")
            keys.append((case.case_id, lesion))
            rows.append(vector.values)
            labels.append(1 if label == POSITIVE else 0)
        if count % 10 == 0:
            progress(f"features of {len(rows)} lesion(s) from {count} case(s)")
    if names is None:
        raise InputError("no labelled lesion to extract features from")
    return FeatureTable(names, tuple(keys), np.vstack(rows), np.array(labels, dtype=int), extractor.sha256)
