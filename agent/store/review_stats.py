"""Review statistics per model version: how often reviewers agreed with the AI (admin page of the worklist).

Counted over reviewed cases: the reviews that are signed off now (one per case; a reopened case counts with its
signed version until its next sign-off supersedes it). A case's model version is the one its decisions judged
(``review_decisions.model_version``), or, for a case signed off without a single decision, the job's models
named the way the worklist names them (``name@version`` joined by commas).

* ``shown``: the AI's findings of the case: detections (``summary.counts``: CTC + CTM) of a slide, lesions
  (``summary.lesion_count``) of an MR series;
* ``confirmed`` / ``rejected``: the reviewer's decisions on them (for MR: lesions accepted / rejected);
* ``reclassed``: confirmed detections whose class the reviewer changed (the label differs from the AI's class
  in ``summary.detections``);
* ``added``: findings the reviewer added (the model missed them).

A finding nobody decided on is kept: it counts as the AI found it, as the worklist's counts do. Precision is
``(shown - rejected) / shown``; ``added_per_case`` is the miss rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Engine, Integer, and_, case, cast, func, literal, select

from agent.review_records import DecisionKind, ReviewStatus
from agent.store import schema
from agent.store.engine import read

_reviews, _decisions, _jobs = schema.reviews, schema.review_decisions, schema.jobs


@dataclass(frozen=True)
class ReviewStats:
    """The reviewed cases of one pipeline and model version, and what their reviewers decided."""

    pipeline: str
    model_version: str
    cases: int
    shown: int
    confirmed: int
    rejected: int
    reclassed: int
    added: int

    @property
    def kept(self) -> int:
        """The AI's findings the reviewers did not reject (confirmed, reclassed or left as they were)."""
        return max(0, self.shown - self.rejected)

    @property
    def precision(self) -> float | None:
        return self.kept / self.shown if self.shown else None

    @property
    def added_per_case(self) -> float | None:
        return self.added / self.cases if self.cases else None


def model_version_of(models: Sequence[Mapping[str, Any]]) -> str:
    """The model version a case's decisions are recorded with: its job's models as ``name@version``, joined."""
    return ",".join(f"{m.get('name')}@{m.get('version')}" for m in models)


def review_stats(engine: Engine, since: float | None = None) -> list[ReviewStats]:
    """Per pipeline and model version, over the cases signed off now (at or after ``since`` when given);
    ordered by pipeline, then model version."""
    dialect = engine.dialect
    is_finding = ~_decisions.c.target.like("a:%")
    ai_class = _json_text(dialect, _jobs.c.summary, "detections", func.substr(_decisions.c.target, 3), "class")
    reclassed = and_(_decisions.c.decision == DecisionKind.CONFIRMED.value, _decisions.c.target.like("d:%"),
                     _decisions.c.label.is_not(None), _decisions.c.label != ai_class)
    decided = (
        select(
            _decisions.c.review_id,
            _count(and_(is_finding, _decisions.c.decision == DecisionKind.CONFIRMED.value)).label("confirmed"),
            _count(and_(is_finding, _decisions.c.decision == DecisionKind.REJECTED.value)).label("rejected"),
            _count(reclassed).label("reclassed"),
            _count(_decisions.c.decision == DecisionKind.ADDED.value).label("added"),
            func.max(_decisions.c.model_version).label("model_version"),
        )
        .select_from(_decisions.join(_reviews, _reviews.c.id == _decisions.c.review_id)
                     .join(_jobs, _jobs.c.id == _reviews.c.job_id))
        .where(_reviews.c.status == ReviewStatus.SIGNED_OFF.value)
        .group_by(_decisions.c.review_id)
        .subquery()
    )
    shown = (_json_int(dialect, _jobs.c.summary, "counts", "CTC") + _json_int(dialect, _jobs.c.summary, "counts", "CTM")
             + _json_int(dialect, _jobs.c.summary, "lesion_count"))
    query = (
        select(_jobs.c.pipeline, _jobs.c.models, shown.label("shown"), decided.c.confirmed, decided.c.rejected,
               decided.c.reclassed, decided.c.added, decided.c.model_version)
        .select_from(_reviews.join(_jobs, _jobs.c.id == _reviews.c.job_id)
                     .outerjoin(decided, decided.c.review_id == _reviews.c.id))
        .where(_reviews.c.status == ReviewStatus.SIGNED_OFF.value)
    )
    if since is not None:
        query = query.where(_reviews.c.signed_at >= since)
    totals: dict[tuple[str, str], list[int]] = {}
    with read(engine) as conn:
        for row in conn.execute(query).mappings():
            version = row["model_version"] or model_version_of(row["models"] or [])
            sums = totals.setdefault((row["pipeline"], version), [0] * 6)
            for i, value in enumerate((1, row["shown"], row["confirmed"], row["rejected"], row["reclassed"],
                                       row["added"])):
                sums[i] += int(value or 0)
    return [ReviewStats(pipeline, version, *sums) for (pipeline, version), sums in sorted(totals.items())]


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _json_text(dialect: Dialect, column: Any, *path: str | ColumnElement[Any]) -> ColumnElement[Any]:
    """The text at ``path`` (keys, or array indexes as text) in a JSON column; NULL where there is none."""
    if dialect.name == "postgresql":
        return func.json_extract_path_text(column, *[literal(p) if isinstance(p, str) else p for p in path])
    steps: ColumnElement[Any] = literal("$")
    for step in path:
        steps = steps.concat(f".{step}" if isinstance(step, str) else literal("[").concat(step).concat("]"))
    return func.json_extract(column, steps)


def _json_int(dialect: Dialect, column: Any, *path: str) -> ColumnElement[Any]:
    return func.coalesce(cast(_json_text(dialect, column, *path), Integer), 0)
