"""The ``scheduler`` section: batches run on a cron schedule, what each reads, how its results are compared with
the previous ones, and which of them go to PACS.

A batch reads one or more sources: ``paths`` (archive folders, read in place), ``store`` (inputs the store has
processed: within the last ``days``, and/or only those whose latest result comes from an older pipeline or model
version than the installed one: the model-version trigger) and ``pacs`` (studies a destination finds by C-FIND and
sends back by C-MOVE).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.section import Section, check_distinct


class SendResults(StrEnum):
    ALWAYS = "always"  # every reprocessed result goes to PACS, as a new result does
    ON_CHANGE = "on_change"  # only results discordant with the previous one (beyond compare), and first results
    NEVER = "never"  # none: the results stay in the store and the result folders


class StoreSource(Section):
    days: float | None = Field(
        default=None, gt=0,
        description="inputs whose latest result is at most this many days older than the run's slot; empty: any",
    )
    older_models: bool = Field(
        default=False,
        description="only inputs whose latest result comes from an older version of its pipeline or of a model "
                    "than the installed one: after a model is replaced, the next run reprocesses what the old "
                    "one produced (within days)",
    )
    pipelines: list[str] = Field(default_factory=list, description="only results of these pipelines; empty: all")


class PacsSource(Section):
    destination: str = Field(description="a destinations[].name: the PACS queried and retrieved from")
    days: int = Field(default=1, ge=1, le=3650,
                      description="studies whose StudyDate falls in the last N days, the slot's day included")
    until: date | None = Field(default=None, description="fixed last StudyDate instead of the slot's day")
    modalities: list[str] = Field(default_factory=list,
                                  description="ModalitiesInStudy to match (one C-FIND each); empty: any")
    retrieve: Literal["move", "get"] = Field(
        default="move", description="move: C-MOVE to this node's SCP (the PACS must know its AE title); get: C-GET "
                                    "on the query's own association")
    timeout_s: float = Field(default=600.0, gt=0, le=86400, description="deadline of each query and retrieval")


class CompareSettings(Section):
    """When a reprocessed result is discordant with the previous result of the same input."""

    count_abs: int = Field(default=2, ge=0,
                           description="a CTC or CTM count is discordant when it moves by at least this many…")
    count_rel: float = Field(default=0.2, ge=0, description="…and by at least this fraction of the previous count")
    lesion_match_mm: float = Field(
        default=10.0, gt=0, description="an MR lesion is the same lesion when its centroid moved at most this far")


class BatchSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="crontab expression, e.g. '0 2 * * *' for 02:00 nightly")
    paths: list[Path] = Field(default_factory=list, description="archive folders or files, read in place")
    store: StoreSource | None = Field(default=None, description="inputs from the store's own history")
    pacs: PacsSource | None = Field(default=None, description="studies found and retrieved from a PACS")
    reprocess: bool = Field(default=False, description="run again even where a result exists (paths and pacs; "
                                                       "a store source always reprocesses)")
    send_results: SendResults = Field(
        default=SendResults.ON_CHANGE, description="which reprocessed results go to PACS: always, on_change, never")
    compare: CompareSettings = Field(default_factory=CompareSettings)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from agent.crontab import crontab_trigger  # apscheduler only where a batch is configured

        try:
            crontab_trigger(value)
        except ValueError as exc:
            raise ValueError(f"a crontab expression with five fields ({exc})") from exc
        return value

    @model_validator(mode="after")
    def _reads_something(self) -> BatchSettings:
        if not self.paths and self.store is None and self.pacs is None:
            raise ValueError(f"batch {self.name} reads nothing: give it paths, store or pacs")
        return self

    def options(self) -> dict[str, object]:
        """What a run of this batch records when it starts, so that a resumed run reads and compares alike."""
        return self.model_dump(mode="json", include={"store", "pacs", "send_results", "compare"})


class SchedulerSettings(Section):
    batches: list[BatchSettings] = Field(default_factory=list)

    @field_validator("batches")
    @classmethod
    def _distinct_names(cls, value: list[BatchSettings]) -> list[BatchSettings]:
        check_distinct((b.name for b in value), "batch")
        return value
