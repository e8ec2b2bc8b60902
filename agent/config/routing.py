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


MatchValue = str | int | float | list[str | int | float] | dict[str, str | float | bool]
"""A value, a list of values (any of them), or a condition: ``{regex: PATTERN}``, ``{min: X, max: Y}`` (numbers,
either bound), and with either ``or_absent: true`` (the keyword may also be absent or empty)."""
CONDITION_KEYS = {"regex", "min", "max", "or_absent"}


class RuleMatch(Section):
    kind: Literal["dicom-series", "slide"] | None = None
    suffix: list[str] | None = None
    path_regex: str | None = None
    dicom: dict[str, MatchValue] = Field(default_factory=dict)
    dicom_any: dict[str, MatchValue] = Field(default_factory=dict)  # at least one of these holds
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

    @field_validator("dicom", "dicom_any")
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
                _check_condition(keyword, expected)
        return value


def _check_condition(keyword: str, condition: dict[str, str | float | bool]) -> None:
    keys = set(condition)
    if not keys <= CONDITION_KEYS or not keys & {"regex", "min", "max"} or ("regex" in keys and keys & {"min", "max"}):
        raise ValueError(f"{keyword}: a value, a list of values, {{regex: PATTERN}} or {{min: X, max: Y}}, "
                         "each optionally with or_absent: true")
    if "regex" in condition:
        _compile(str(condition["regex"]))
    for bound in ("min", "max"):
        if bound in condition and (isinstance(condition[bound], bool | str)):
            raise ValueError(f"{keyword}: {bound} is a number")
    if not isinstance(condition.get("or_absent", False), bool):
        raise ValueError(f"{keyword}: or_absent is true or false")


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


MRI_BODY_PART = "(?i)abd|liver|hepat"
MRI_T2_NAME = "(?i)t2|haste|ssfse|stir"
MRI_T2_MIN_ECHO_TIME_MS = 60

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "slides",
        "pipeline": "wsi-ctc",
        "match": {"kind": "slide", "suffix": [".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms"]},
    },
    {"name": "dicom-slides", "pipeline": "wsi-ctc", "match": {"kind": "dicom-series", "dicom": {"Modality": "SM"}}},
    {
        # what mri-lesion-unet declares as its intended input (its manifest's info.intended_input): T2-weighted
        # abdominal MR, named so in SeriesDescription or ProtocolName (Philips leaves the first empty) or with a
        # T2 echo time; the pipeline checks the rest (contrast, plane, voxel size) and refuses with the reason
        "name": "mri",
        "pipeline": "mri-tumour",
        "match": {
            "kind": "dicom-series",
            "dicom": {"Modality": "MR", "BodyPartExamined": {"regex": MRI_BODY_PART, "or_absent": True}},
            "dicom_any": {"SeriesDescription": {"regex": MRI_T2_NAME}, "ProtocolName": {"regex": MRI_T2_NAME},
                          "EchoTime": {"min": MRI_T2_MIN_ECHO_TIME_MS}},
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
