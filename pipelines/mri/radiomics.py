# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Radiomics feature vectors: pyradiomics' extractor, configured by a parameter file, and nothing more.

The wrapper builds the extractor once from the parameter file (by default ``config/radiomics.yaml``, shipped as
package data of ``oncoagent_config``) and keeps the file's sha256; each lesion's vector carries that hash, so
vectors from different parameter files are never mixed. Extraction itself is one ``execute`` call per lesion on
the series image and its label map; pyradiomics' diagnostics are dropped and the values become floats in the
extractor's feature order.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from pipelines.errors import PipelineError

log = logging.getLogger(__name__)

# config/radiomics.yaml, installed as the package oncoagent_config (pyproject.toml maps the folder)
DEFAULT_PARAMS = Path(str(files("oncoagent_config") / "radiomics.yaml"))
DIAGNOSTICS_PREFIX = "diagnostics_"


class RadiomicsError(PipelineError):
    """pyradiomics cannot describe a lesion (too small, flat, outside the image)."""


@dataclass(frozen=True)
class FeatureVector:
    names: tuple[str, ...]
    values: npt.NDArray[np.float64]
    params_sha256: str

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, (float(v) for v in self.values), strict=True))


def params_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RadiomicsExtractor:
    """pyradiomics' ``RadiomicsFeatureExtractor`` built once from a parameter file."""

    def __init__(self, params: Path = DEFAULT_PARAMS) -> None:
        import radiomics
        from radiomics import featureextractor

        if not params.is_file():
            raise FileNotFoundError(f"radiomics parameter file {params} does not exist")
        # pyradiomics prints through a stderr handler of its own: silence that one and let its records reach
        # our logging configuration; below ERROR they are per-feature-class chatter and its advice against
        # the fixed bin count we chose on purpose (IBSI recommends it for arbitrary-unit MR intensities)
        radiomics.setVerbosity(60)
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        logging.getLogger("pykwalify").setLevel(logging.WARNING)  # validates the parameter file, says so at INFO
        self.params = params
        self.sha256 = params_sha256(params)
        self.extractor: Any = featureextractor.RadiomicsFeatureExtractor(str(params))

    def extract(self, image: sitk.Image, labels: sitk.Image, label: int) -> FeatureVector:
        """Features of lesion ``label`` of the label map ``labels`` (on the grid of ``image``)."""
        try:
            raw = self.extractor.execute(image, labels, label=label)
        except ValueError as exc:  # pyradiomics' way of saying the ROI is unusable (too small, flat)
            raise RadiomicsError(f"radiomics cannot describe lesion {label}: {exc}") from exc
        names = tuple(k for k in raw if not k.startswith(DIAGNOSTICS_PREFIX))
        values = np.fromiter((float(raw[k]) for k in names), dtype=np.float64, count=len(names))
        return FeatureVector(names, values, self.sha256)
