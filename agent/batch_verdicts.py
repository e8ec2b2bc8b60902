"""A batch job's success, judged: its result against the input's previous one, and what of it goes to PACS.

The executor asks :func:`judge` before recording a success. A job no batch run awaits is left as it is. For a
batch's job, the new result's figures are compared with those the run kept when it took the input
(:mod:`agent.comparison`), and the run's ``send_results`` decides whether its DICOM objects go to the outbox:
``always``; ``on_change``, when the result is new or discordant (one that moved within the thresholds, like a
concordant one, supersedes the previous result quietly); ``never``. The verdict is recorded with the
success, in its transaction (with whether its objects went to the outbox). A result kept from PACS this way
is not an unsent one (``oncoagent jobs --unsent`` lists those without patient context): the previous result
stays the one PACS has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.comparison import compare, figures
from agent.config import CompareSettings, SendResults
from agent.records import BatchVerdict, Delivery, Job, Verdict
from agent.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judged:
    deliveries: list[Delivery]
    review: BatchVerdict | None = None


def judge(store: Store, job: Job, outcome: Mapping[str, Any], deliveries: list[Delivery]) -> Judged:
    pending = store.batch_review_pending(job.id)
    if pending is None:
        return Judged(deliveries)
    options = pending.options
    limits = CompareSettings.model_validate(options.get("compare") or {})
    send = SendResults(options.get("send_results") or SendResults.ALWAYS)
    new = figures(job.pipeline, job.pipeline_version, outcome.get("models") or [], job.id, outcome.get("summary"))
    verdict, reasons = compare(pending.previous, new, limits)
    if verdict is Verdict.DISCORDANT:
        log.warning("job %d (batch %s, run %d): discordant with job %s: %s", job.id, pending.batch,
                    pending.run_id, (pending.previous or {}).get("job_id"), "; ".join(reasons))
    else:
        log.info("job %d (batch %s, run %d): %s", job.id, pending.batch, pending.run_id, verdict.value)
    review = BatchVerdict(pending, verdict, reasons)
    if send is SendResults.ALWAYS or (send is SendResults.ON_CHANGE and not verdict.concordant):
        return Judged(deliveries, review)
    if deliveries:
        log.info("job %d: %d object(s) not sent (batch %s, send_results %s, %s)", job.id, len(deliveries),
                 pending.batch, send.value, verdict.value)
    return Judged([], review)


def previous_figures(store: Store, input_id: int) -> dict[str, Any] | None:
    """The figures of the input's latest successful result (any pipeline version), or None when it has none."""
    latest = store.latest_success(input_id, None)
    if latest is None:
        return None
    return figures(latest.pipeline, latest.pipeline_version, latest.models, latest.id, store.job_summary(latest.id))
