"""Typed views of a result's content: what the builders of objects, figures and documents take.

``result.json`` is a dict written by the pipelines; these frozen dataclasses read it once (tolerating optional
keys that older results lack) so that everything downstream works on named, typed fields. A summary that
does not follow its pipeline's schema raises :class:`ReportInputError` with what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reports.errors import ReportInputError

WSI_PIPELINE = "wsi-ctc"
MRI_PIPELINE = "mri-tumour"
INSPECT_PIPELINE = "inspect"


@dataclass(frozen=True)
class Algorithm:
    """A model that produced a result: name, version and weights hash (from ``doc["models"]``)."""

    name: str
    version: str
    sha256: str

    @classmethod
    def from_doc(cls, item: Mapping[str, Any]) -> Algorithm:
        return cls(str(item.get("name", "")), str(item.get("version", "")), str(item.get("sha256", "")))

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}".strip()


@dataclass(frozen=True)
class Detection:
    """One CTC or CTM, its box in level-0 pixels (x0, y0, x1, y1), the model's confidence (None: a cell a
    reviewer added, which no model scored)."""

    cls: str
    confidence: float | None
    l0_x0: float
    l0_y0: float
    l0_x1: float
    l0_y1: float
    members: int = 0

    @classmethod
    def from_doc(cls, item: Mapping[str, Any]) -> Detection:
        try:
            x0, y0, x1, y1 = (float(v) for v in item["l0_box"])
            confidence = None if item["confidence"] is None else float(item["confidence"])
            return cls(str(item["class"]), confidence, x0, y0, x1, y1, int(item.get("members") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportInputError(f"detection without class, confidence and l0_box: {item!r}") from exc

    @property
    def l0_centre(self) -> tuple[float, float]:
        return ((self.l0_x0 + self.l0_x1) / 2, (self.l0_y0 + self.l0_y1) / 2)


@dataclass(frozen=True)
class SlideFindings:
    """The ``wsi-ctc`` summary."""

    ctc_count: int
    ctm_count: int
    tissue_area_mm2: float
    ctc_density_per_mm2: float | None
    ctm_density_per_mm2: float | None
    priority_score: float
    priority: str
    detections: tuple[Detection, ...]
    width_px: int | None = None
    height_px: int | None = None
    mpp_um: tuple[float, float] | None = None
    slide: Mapping[str, Any] = field(default_factory=dict)
    processing: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> SlideFindings:
        try:
            density = summary.get("density_per_mm2") or {}
            slide = summary.get("slide") or {}
            mpp = slide.get("mpp_um")
            return cls(
                ctc_count=int(summary["ctc_count"]),
                ctm_count=int(summary["ctm_count"]),
                tissue_area_mm2=float(summary.get("tissue_area_mm2") or 0.0),
                ctc_density_per_mm2=_optional_float(density.get("CTC")),
                ctm_density_per_mm2=_optional_float(density.get("CTM")),
                priority_score=float(summary.get("priority_score") or 0.0),
                priority=str(summary.get("priority") or "low"),
                detections=tuple(Detection.from_doc(d) for d in summary.get("detections") or ()),
                width_px=_optional_int(slide.get("width_px")),
                height_px=_optional_int(slide.get("height_px")),
                mpp_um=(float(mpp[0]), float(mpp[1])) if isinstance(mpp, Sequence) and len(mpp) == 2 else None,
                slide=dict(slide),
                processing=dict(summary.get("processing") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportInputError(f"wsi-ctc summary: {type(exc).__name__}: {exc}") from exc

    def top_detections(self, limit: int) -> tuple[Detection, ...]:
        """The ``limit`` most confident detections, CTMs before CTCs at equal confidence (cells a reviewer
        added, without a confidence, last)."""
        ranked = sorted(self.detections, key=lambda d: (d.confidence is None, -(d.confidence or 0.0),
                                                        d.cls != "CTM", d.l0_y0, d.l0_x0))
        return tuple(ranked[:limit])


@dataclass(frozen=True)
class Lesion:
    """One lesion of the ``mri-tumour`` summary (``index`` is its value in the label map)."""

    index: int
    volume_ml: float
    longest_diameter_mm: float
    centroid_lps_mm: tuple[float, float, float] | None
    malignancy_probability: float | None
    label: str | None
    features: Mapping[str, float] = field(default_factory=dict)
    radiomics_params_sha256: str | None = None
    plausibility: tuple[str, ...] = ()  # why it is implausible as a lesion (shape, fluid signal); () when it is not

    @classmethod
    def from_doc(cls, item: Mapping[str, Any]) -> Lesion:
        try:
            centroid = item.get("centroid_lps_mm")
            features = {str(k): float(v) for k, v in (item.get("features") or {}).items() if _finite(v)}
            return cls(
                index=int(item["index"]),
                volume_ml=float(item["volume_ml"]),
                longest_diameter_mm=float(item["longest_diameter_mm"]),
                centroid_lps_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])) if centroid else None,
                malignancy_probability=_optional_float(item.get("malignancy_probability")),
                label=str(item["label"]) if item.get("label") is not None else None,
                features=features,
                radiomics_params_sha256=item.get("radiomics_params_sha256"),
                plausibility=tuple(str(reason) for reason in item.get("plausibility") or ()),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ReportInputError(f"mri-tumour lesion: {type(exc).__name__}: {exc}") from exc

    @property
    def name(self) -> str:
        return f"Lesion {self.index}"


@dataclass(frozen=True)
class MriFindings:
    """The ``mri-tumour`` summary."""

    lesions: tuple[Lesion, ...]
    finding: str
    label_map_file: str | None
    series_summary: Mapping[str, Any] = field(default_factory=dict)
    volume: Mapping[str, Any] = field(default_factory=dict)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> MriFindings:
        try:
            lesions = tuple(Lesion.from_doc(item) for item in summary.get("lesions") or ())
            series = dict(summary.get("series_summary") or {})
            return cls(
                lesions=lesions,
                finding=str(series.get("finding") or ("no lesion found" if not lesions else "lesions found")),
                label_map_file=summary.get("label_map_file"),
                series_summary=series,
                volume=dict(summary.get("volume") or {}),
                stage_seconds={str(k): float(v) for k, v in (summary.get("stage_seconds") or {}).items()},
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ReportInputError(f"mri-tumour summary: {type(exc).__name__}: {exc}") from exc

    @property
    def malignant(self) -> int:
        return sum(1 for les in self.lesions if les.label == "malignant")

    @property
    def total_volume_ml(self) -> float:
        return round(sum(les.volume_ml for les in self.lesions), 3)


def algorithms(doc: Mapping[str, Any]) -> tuple[Algorithm, ...]:
    return tuple(Algorithm.from_doc(m) for m in doc.get("models") or () if isinstance(m, Mapping))


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
