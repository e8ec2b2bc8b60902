"""The worklist's cases: one per input and pipeline (its newest job), with the state of its review.

A case's status says where it stands for a reader: ``queued`` or ``analysing`` while its job waits or runs,
``failed``, ``new`` once analysed and not yet opened, ``in_review``, ``signed_off``. ``no_context`` is not a
status but a flag (``unsent_reason``): the result exists but could not be made for PACS. A page is one indexed
query (the newest job per input and pipeline comes from ``uq_job_effect``, the latest review from
``uq_review_version``) with its filters in SQL, so 10,000 cases page as fast as ten.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, Text, and_, case, cast, exists, func, or_, select
from sqlalchemy.sql import ColumnElement

from agent.store import schema
from agent.store.engine import read

STATUSES = ("queued", "analysing", "failed", "new", "in_review", "signed_off")


@dataclass(frozen=True)
class CaseFilter:
    pipelines: Collection[str] | None = None  # None: all (a role's visibility narrows it)
    status: str | None = None  # one of STATUSES
    priority: int | None = None  # a routing Priority value
    since: float | None = None  # received at or after
    until: float | None = None  # received before
    reviewer: str | None = None  # the holder or signer's user name
    discordant: bool = False  # only cases a batch run judged discordant
    no_context: bool = False  # only results kept for lack of patient context
    search: str | None = None  # in accession, patient ID, slide file name, series description (case-insensitive)


@dataclass(frozen=True)
class CaseRow:
    job_id: int
    input_id: int
    input_kind: str
    input_key: str
    input_path: str
    result_path: str | None
    pipeline: str
    models: list[dict[str, Any]]
    job_status: str
    priority: int
    summary: dict[str, Any] | None
    attrs: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    last_error: str | None
    unsent_reason: str | None
    progress: tuple[int | None, int | None, str | None, float | None] = (None, None, None, None)
    review_status: str | None = None
    review_version: int | None = None
    holder: str | None = None
    signed_by: str | None = None
    signed_at: float | None = None
    review_result: dict[str, Any] | None = None
    discordant: bool = False

    @property
    def status(self) -> str:
        if self.job_status == "queued":
            return "queued"
        if self.job_status == "running":
            return "analysing"
        if self.job_status != "succeeded":
            return "failed"
        return self.review_status if self.review_status in ("in_review", "signed_off") else "new"


_REVIEW = schema.reviews.alias("review")
_HOLDER = schema.users.alias("holder")
_SIGNER = schema.users.alias("signer")


def _tables() -> tuple[Any, Any, Any, Any, Any]:
    return schema.jobs, schema.inputs, _REVIEW, _HOLDER, _SIGNER


def _newest_job(jobs: Any) -> ColumnElement[bool]:
    other = jobs.alias("other")
    newest = (select(func.max(other.c.id))
              .where(other.c.input_id == jobs.c.input_id, other.c.pipeline == jobs.c.pipeline)
              .scalar_subquery())
    return jobs.c.id == newest  # type: ignore[no-any-return]


def _latest_review(jobs: Any, review: Any) -> ColumnElement[bool]:
    other = schema.reviews.alias("other_review")
    latest = select(func.max(other.c.version)).where(other.c.job_id == jobs.c.id).scalar_subquery()
    return and_(review.c.job_id == jobs.c.id, review.c.version == latest)


def _discordant(jobs: Any) -> Any:
    runs = schema.batch_run_inputs
    return exists().where(runs.c.job_id == jobs.c.id, runs.c.verdict == "discordant")


def _score(jobs: Any) -> ColumnElement[Any]:
    """The AI's score for ordering: a slide's priority score, an MR series' highest malignancy probability."""
    slide = jobs.c.summary["priority_score"].as_float()
    series = jobs.c.summary[("series_summary", "max_malignancy_probability")].as_float()
    return func.coalesce(slide, series, -1.0)


def _status_clause(status: str, jobs: Any, review: Any) -> ColumnElement[bool]:
    if status == "queued":
        return jobs.c.status == "queued"  # type: ignore[no-any-return]
    if status == "analysing":
        return jobs.c.status == "running"  # type: ignore[no-any-return]
    if status == "failed":
        return jobs.c.status.in_(("failed", "cancelled"))  # type: ignore[no-any-return]
    succeeded = jobs.c.status == "succeeded"
    if status == "new":
        return and_(succeeded, or_(review.c.status.is_(None), review.c.status == "superseded"))
    return and_(succeeded, review.c.status == status)


def _select() -> Select[Any]:
    jobs, inputs, review, holder, signer = _tables()
    return (
        select(jobs.c.id, jobs.c.input_id, inputs.c.kind, inputs.c.key, inputs.c.path, jobs.c.result_path,
               jobs.c.pipeline, jobs.c.models, jobs.c.status,
               jobs.c.priority, jobs.c.summary, inputs.c.attrs, inputs.c.created_at, jobs.c.started_at,
               jobs.c.finished_at, jobs.c.last_error, jobs.c.unsent_reason, jobs.c.progress_done,
               jobs.c.progress_total, jobs.c.progress_stage, jobs.c.progress_at, review.c.status.label("rstatus"),
               review.c.version, holder.c.name.label("holder"), signer.c.name.label("signer"), review.c.signed_at,
               review.c.result, _discordant(jobs).label("discordant"))
        .join(inputs, inputs.c.id == jobs.c.input_id)
        .outerjoin(review, _latest_review(jobs, review))
        .outerjoin(holder, holder.c.id == review.c.holder_id)
        .outerjoin(signer, signer.c.id == review.c.signed_by)
    )


def _query(where: CaseFilter) -> Select[Any]:
    jobs, inputs, review, holder, signer = _tables()
    query = _select().where(_newest_job(jobs))
    if where.pipelines is not None:
        query = query.where(jobs.c.pipeline.in_(list(where.pipelines)))
    if where.status is not None:
        if where.status not in STATUSES:
            raise ValueError(f"unknown case status {where.status!r}; one of {', '.join(STATUSES)}")
        query = query.where(_status_clause(where.status, jobs, review))
    if where.priority is not None:
        query = query.where(jobs.c.priority == where.priority)
    if where.since is not None:
        query = query.where(inputs.c.created_at >= where.since)
    if where.until is not None:
        query = query.where(inputs.c.created_at < where.until)
    if where.reviewer:
        query = query.where(or_(holder.c.name == where.reviewer, signer.c.name == where.reviewer))
    if where.discordant:
        query = query.where(_discordant(jobs))
    if where.no_context:
        query = query.where(jobs.c.unsent_reason.is_not(None))
    if where.search:
        needle = "%" + where.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(
            func.lower(cast(inputs.c.attrs, Text)).like(needle, escape="\\"),
            func.lower(inputs.c.key).like(needle, escape="\\"),
        ))
    return query


SORTS = ("priority", "received", "analysed")


def list_cases(engine: Engine, where: CaseFilter, offset: int = 0, limit: int = 50, sort: str = "priority"
               ) -> tuple[list[CaseRow], int]:
    """A page of cases and how many cases the filter matches in all. ``sort``: ``priority`` — most pressing
    first (finished before waiting, then routing priority, then the AI's score, then the newest) —, ``received``
    or ``analysed`` (newest first)."""
    query = _query(where)
    jobs, inputs = schema.jobs, schema.inputs
    if sort == "priority":
        order = [case((jobs.c.status.in_(("queued", "running")), 1), else_=0), jobs.c.priority,
                 _score(jobs).desc(), jobs.c.id.desc()]
    elif sort == "received":
        order = [inputs.c.created_at.desc(), jobs.c.id.desc()]
    elif sort == "analysed":
        order = [jobs.c.finished_at.is_(None), jobs.c.finished_at.desc(), jobs.c.id.desc()]
    else:
        raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    ordered = query.order_by(*order).offset(max(0, offset)).limit(max(1, limit))
    with read(engine) as conn:
        rows = [_row(r) for r in conn.execute(ordered).mappings()]
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    return rows, int(total)


def get_case(engine: Engine, job_id: int) -> CaseRow | None:
    """The case whose job is ``job_id`` (whether or not it is the newest of its input)."""
    with read(engine) as conn:
        row = conn.execute(_select().where(schema.jobs.c.id == job_id)).mappings().first()
    return None if row is None else _row(row)


def _row(r: Any) -> CaseRow:
    return CaseRow(
        job_id=r["id"], input_id=r["input_id"], input_kind=r["kind"], input_key=r["key"], input_path=r["path"],
        result_path=r["result_path"], pipeline=r["pipeline"], models=r["models"] or [],
        job_status=r["status"], priority=r["priority"], summary=r["summary"], attrs=r["attrs"] or {},
        created_at=r["created_at"], started_at=r["started_at"], finished_at=r["finished_at"],
        last_error=r["last_error"], unsent_reason=r["unsent_reason"],
        progress=(r["progress_done"], r["progress_total"], r["progress_stage"], r["progress_at"]),
        review_status=r["rstatus"], review_version=r["version"], holder=r["holder"], signed_by=r["signer"],
        signed_at=r["signed_at"], review_result=r["result"], discordant=bool(r["discordant"]),
    )
