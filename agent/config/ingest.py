"""The ``ingest`` section: the inbox and scanner folders that :mod:`agent.ingest` watches, and how."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from agent.config.section import Section


class IngestSettings(Section):
    inbox: bool = Field(default=True, description="watch <data_dir>/inbox")
    folders: list[Path] = Field(default_factory=list, description="scanner folders, watched recursively")
    settle_seconds: float = Field(default=5.0, ge=0)
    scan_interval_s: float = Field(default=2.0, gt=0)
    quiet_seconds: float = Field(default=10.0, ge=0, description="a DICOM series is complete after this")
    max_wait_s: float = Field(
        default=600.0, ge=0, description="longest wait, after a series' first instance, for the associations "
        "delivering it to close and for the instance count it declares"
    )
    watch_mode: Literal["auto", "events", "polling"] = Field(
        default="auto", description="file-system events with periodic rescans, or polling only (network shares)"
    )
    rescan_interval_s: float = Field(default=60.0, gt=0, description="full rescan of watched folders (events mode)")
    unopenable_grace_s: float | None = Field(
        default=None, ge=0, description="how long a settled file openslide cannot open may still be written "
        "(default: 3 x settle_seconds, at least 10 s); then it is quarantined"
    )
    filename_regex: str | None = Field(
        default=None, description="named groups (accession, patient_id, study_uid…) give a slide its context; "
        "matched on the file name, then on its path under the watched folder"
    )
    sidecar: bool = Field(default=True, description="read <slide>.json beside a slide for its context")

    @field_validator("filename_regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value
