"""The ``ingest`` settings as the folder intake uses them: defaults filled in, the filename regex compiled."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.config import IngestSettings


@dataclass(frozen=True)
class IngestKnobs:
    """The watcher's settings, resolved (defaults filled in, the regex compiled)."""

    watch_mode: str
    rescan_interval_s: float
    unopenable_grace_s: float
    filename_regex: re.Pattern[str] | None
    sidecar: bool

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> IngestKnobs:
        grace = ingest.unopenable_grace_s
        return cls(
            watch_mode=ingest.watch_mode,
            rescan_interval_s=ingest.rescan_interval_s,
            unopenable_grace_s=grace if grace is not None else max(3 * ingest.settle_seconds, 10.0),
            filename_regex=re.compile(ingest.filename_regex) if ingest.filename_regex else None,
            sidecar=ingest.sidecar,
        )
