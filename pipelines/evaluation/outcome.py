"""What an evaluation found: headline figures with their intervals, sections of tables and figures, per case.

One :class:`EvaluationOutcome` becomes both ``report.json`` (:meth:`EvaluationOutcome.as_dict`) and the HTML
report, so the two always carry the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.base import ModelRef
from pipelines.evaluation.bootstrap import Bootstrap, Estimate


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # PNG file names beside the report

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "text": self.text, "table": {"columns": self.columns, "rows": self.rows},
                "figures": self.figures}


@dataclass
class EvaluationOutcome:
    kind: str  # detector | segmenter | classifier | mri
    data: str
    source: str  # what the data was: a YOLO data set, QuPath-annotated slides, NIfTI case folders
    unit: str  # what the bootstrap resamples: images, slides, cases
    cases: int
    models: list[ModelRef]
    boot: Bootstrap
    headline: dict[str, Estimate] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    per_case: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def headline_values(self) -> dict[str, float | None]:
        """The headline figures as plain numbers (what a site-validation record keeps)."""
        return {k: (None if e.value is None else round(e.value, 4)) for k, e in self.headline.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "data": self.data,
            "source": self.source,
            "unit": self.unit,
            "cases": self.cases,
            "models": [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in self.models],
            "bootstrap": {"resamples": self.boot.resamples, "seed": self.boot.seed, "level": 0.95,
                          "method": f"percentile, resampling {self.unit}"},
            "headline": {k: e.as_dict() for k, e in self.headline.items()},
            "sections": [s.as_dict() for s in self.sections],
            "per_case": self.per_case,
            "details": self.details,
            "notes": self.notes,
        }
