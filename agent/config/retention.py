"""The ``retention`` section: how long received inputs and result folders are kept once their results were
delivered, and the disk high-water mark. Every default deletes nothing (read by :mod:`agent.purge`)."""

from __future__ import annotations

from pydantic import Field

from agent.config.section import Section


class RetentionSettings(Section):
    instances_days: float | None = Field(
        default=None, gt=0, description="delete received instances and slides moved into storage/ this many days "
        "after every result of theirs was delivered; empty: never by age"
    )
    results_days: float | None = Field(
        default=None, gt=0, description="delete a job's result folder this many days after its results were "
        "delivered; empty: never by age"
    )
    high_water_percent: float | None = Field(
        default=None, gt=0, lt=100, description="when the data directory's disk is fuller than this, delete the "
        "oldest delivered inputs and results first (never any younger than the days above) until it is under it"
    )
    interval_s: float = Field(default=3600.0, ge=10, description="how often the daemon purges")

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.instances_days, self.results_days, self.high_water_percent))
