"""The ``routing`` section: declarative rules that send an input to a pipeline at a priority."""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from agent.config.section import Section, check_distinct


class Priority(IntEnum):
    """Job priority; lower runs first (STAT before routine)."""

    STAT = 0
    URGENT = 1
    ROUTINE = 2
    BATCH = 3  # reprocessing queued by a batch: after all new work, and bounded (executor.batch_workers/window)


MatchValue = str | int | float | list[str | int | float] | dict[str, str]


class RuleMatch(Section):
    kind: Literal["dicom-series", "slide"] | None = None
    suffix: list[str] | None = None
    path_regex: str | None = None
    dicom: dict[str, MatchValue] = Field(default_factory=dict)
    min_slices: int | None = Field(default=None, ge=1)

    @field_validator("suffix")
    @classmethod
    def _lower_suffixes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if any(not s.startswith(".") for s in value):
            raise ValueError("suffixes that start with a dot, such as .svs")
        return [s.lower() for s in value]

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("dicom")
    @classmethod
    def _dicom_keywords(cls, value: dict[str, MatchValue]) -> dict[str, MatchValue]:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        for keyword, expected in value.items():
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"DICOM keywords; {keyword!r} is not one")
            if dictionary_VR(tag) == "SQ":
                raise ValueError(f"non-sequence DICOM keywords; {keyword} is a sequence")
            if isinstance(expected, dict):
                if set(expected) != {"regex"}:
                    raise ValueError(f"{keyword}: a value, a list of values or {{regex: PATTERN}}")
                _compile(expected["regex"])
        return value


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"a valid regular expression ({exc})") from exc


class RoutingRule(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    pipeline: str
    priority: Literal["stat", "urgent", "routine"] = "routine"
    match: RuleMatch = Field(default_factory=RuleMatch)

    @property
    def priority_level(self) -> Priority:
        return Priority[self.priority.upper()]


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "slides",
        "pipeline": "wsi-ctc",
        "match": {"kind": "slide", "suffix": [".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms"]},
    },
    {"name": "dicom-slides", "pipeline": "wsi-ctc", "match": {"kind": "dicom-series", "dicom": {"Modality": "SM"}}},
    {
        "name": "mri",
        "pipeline": "mri-tumour",
        "match": {
            "kind": "dicom-series",
            "dicom": {"Modality": "MR", "SeriesDescription": {"regex": "."}},
            "min_slices": 8,
        },
    },
)


class RoutingSettings(Section):
    rules: list[RoutingRule] = Field(default_factory=lambda: [RoutingRule(**r) for r in DEFAULT_RULES])

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RoutingRule]) -> list[RoutingRule]:
        check_distinct((r.name for r in rules), "rule")
        return rules
