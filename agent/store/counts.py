"""The store at a glance: how many instances, inputs, jobs and outbox entries there are, by kind and status,
read in one snapshot (``oncoagent status``, the demo); and the backlog alone (``/metrics``).

Each number comes from its concept's module; this one only gathers them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from agent.records import InputKind, InputState, JobStatus
from agent.store import inputs, instances, jobs, outbox
from agent.store.engine import read


def counts(engine: Engine) -> dict[str, Any]:
    with read(engine) as conn:
        by_status = jobs.count_by_status(conn)
        by_kind = inputs.count_by_kind(conn)
        by_state = inputs.count_by_state(conn)
        outbox_by_status = outbox.count_by_status(conn)
        instance_count = instances.count(conn)
        unsent = jobs.count_unsent(conn)
    return {
        "instances": instance_count,
        "series": by_kind.get(InputKind.DICOM_SERIES.value, 0),
        "slides": by_kind.get(InputKind.SLIDE.value, 0),
        "inputs_by_state": {s.value: by_state.get(s.value, 0) for s in InputState},
        "jobs": {s.value: by_status.get(s.value, 0) for s in JobStatus},
        "outbox": outbox_by_status,
        "results_unsent": unsent,
    }


def backlog(engine: Engine) -> dict[str, dict[str, int]]:
    """Jobs and outbox entries by status, in one snapshot: what a metrics scrape reads (no count of every
    instance)."""
    with read(engine) as conn:
        return {"jobs": jobs.count_by_status(conn), "outbox": outbox.count_by_status(conn)}
