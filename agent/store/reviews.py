"""Case reviews of the web worklist (``reviews`` and ``review_decisions``, revision 0006).

A review is one version of a reviewer's pass over a job's result. Version 1 starts when someone first opens the
case (:func:`start_review`); while it is ``in_review`` its decisions may be made, changed and undone, one per
target (``"d:<index>"`` a detection, ``"l:<n>"`` a lesion, ``"a:<n>"`` one the reviewer added); a sign-off makes
it final. Human decisions are never edited in place: a signed version stays as it was signed, and reopening the
case (:func:`reopen_review`) starts the next version, its decisions a copy of the signed one's (who and when
included). When that version is signed off in turn, the one it replaces becomes ``superseded``.

Changes that depend on a review's state run in one write transaction that reads the state under a row lock
(PostgreSQL ``FOR UPDATE``; SQLite's writers hold the whole database), so two sign-offs of one version cannot both
succeed and two reviewers opening a new case start one version 1. A refused change raises
:class:`~agent.errors.ReviewStateError` and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Integer, RowMapping, Select, delete, func, insert, literal, select, update
from sqlalchemy.orm import aliased

from agent.errors import ReviewStateError, StoreError
from agent.records import Job, JobStatus
from agent.review_records import Decision, DecisionKind, Review, ReviewStatus
from agent.store import jobs, schema
from agent.store.engine import insert_id, locked, read, write
from agent.store.schema import escape_nul

TARGET = re.compile(r"^([dla]):(\d{1,9})$")
LABEL_LIMIT = 32  # review_decisions.label
MODEL_VERSION_LIMIT = 64  # review_decisions.model_version
UID_LIMIT = 64  # reviews.sr_sop_instance_uid
NOTE_LIMIT = 4000

_reviews, _decisions, _users = schema.reviews, schema.review_decisions, schema.users


def latest_review(engine: Engine, job_id: int) -> Review | None:
    """The job's newest review version; None when nobody has opened the case."""
    with read(engine) as conn:
        return _latest(conn, job_id)


def review_version(engine: Engine, job_id: int, version: int) -> Review | None:
    """Version ``version`` of the job's review (a reopened case's signed predecessor), or None."""
    query = _review_query().where(_reviews.c.job_id == job_id, _reviews.c.version == version)
    with read(engine) as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else _review_from_row(row)


def review_summaries(engine: Engine, job_ids: Collection[int]) -> dict[int, Review]:
    """The newest review of each of ``job_ids`` that has one, by job id, in one query (a worklist page)."""
    if not job_ids:
        return {}
    newest = (select(_reviews.c.job_id, func.max(_reviews.c.version).label("version"))
              .where(_reviews.c.job_id.in_(set(job_ids))).group_by(_reviews.c.job_id).subquery())
    query = _review_query().join(newest, (newest.c.job_id == _reviews.c.job_id)
                                 & (newest.c.version == _reviews.c.version))
    with read(engine) as conn:
        return {review.job_id: review for review in map(_review_from_row, conn.execute(query).mappings())}


def signed_reviews(engine: Engine, since: float | None = None, pipelines: Sequence[str] = ()
                   ) -> list[tuple[Review, Job]]:
    """The signed-off reviews (one per job: its newest signed version; superseded and in-review versions are
    left out) signed at or after ``since``, of jobs of ``pipelines`` (all when empty), each with its job, oldest
    sign-off first (``oncoagent export training-data``)."""
    query = _review_query().join(schema.jobs, schema.jobs.c.id == _reviews.c.job_id).where(
        _reviews.c.status == ReviewStatus.SIGNED_OFF.value)
    if since is not None:
        query = query.where(_reviews.c.signed_at >= since)
    if pipelines:
        query = query.where(schema.jobs.c.pipeline.in_(list(pipelines)))
    with read(engine) as conn:
        found = [_review_from_row(row) for row in conn.execute(query.order_by(_reviews.c.signed_at,
                                                                               _reviews.c.id)).mappings()]
        return [(review, jobs.job_in(conn, review.job_id)) for review in found]


def start_review(engine: Engine, job_id: int, user_id: int, now: float) -> Review:
    """Open the job's case for ``user_id``: its review in progress (held by this user if nobody held it), or a
    new version 1 if it has none; a signed-off review comes back unchanged (reopen it to change it).
    :class:`ReviewStateError` when the job has not succeeded (no result to review)."""
    with write(engine) as conn:
        _lock_job(conn, job_id, need_result=True)
        review = _latest(conn, job_id)
        if review is None:
            review_id = insert_id(conn, insert(_reviews).values(
                job_id=job_id, version=1, status=ReviewStatus.IN_REVIEW.value, holder_id=user_id, started_at=now,
                updated_at=now))
        elif review.status is ReviewStatus.IN_REVIEW and review.holder_id is None:
            review_id = review.id
            conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(holder_id=user_id, updated_at=now))
        else:
            return review
        return _get(conn, review_id)


def reopen_review(engine: Engine, job_id: int, user_id: int, now: float) -> Review:
    """Start the next version of a signed-off case, held by ``user_id``, its decisions a copy of the signed
    version's; the signed version stays signed off. :class:`ReviewStateError` unless the newest version is
    signed off."""
    with write(engine) as conn:
        _lock_job(conn, job_id, need_result=False)
        signed = _latest(conn, job_id)
        if signed is None or signed.status is not ReviewStatus.SIGNED_OFF:
            state = "has no review" if signed is None else f"review version {signed.version} is {signed.status}"
            raise ReviewStateError(f"job {job_id} cannot be reopened: its {state}, not signed off")
        review_id = insert_id(conn, insert(_reviews).values(
            job_id=job_id, version=signed.version + 1, status=ReviewStatus.IN_REVIEW.value, holder_id=user_id,
            started_at=now, updated_at=now))
        copied = [c for c in _decisions.c if c.name not in ("id", "review_id")]
        conn.execute(insert(_decisions).from_select(
            ["review_id", *(c.name for c in copied)],
            select(literal(review_id, Integer), *copied).where(_decisions.c.review_id == signed.id)))
        return _get(conn, review_id)


def decide(engine: Engine, review_id: int, target: str, decision: DecisionKind | str, label: str | None,
           geometry: Any, model_version: str | None, user_id: int, now: float) -> Decision:
    """Record ``user_id``'s decision on ``target``, replacing an earlier one on it. ValueError for a malformed
    target (``added`` goes with ``"a:<n>"`` targets only), an unknown decision or an over-long label or model
    version; :class:`ReviewStateError` when the
    review is not in review."""
    kind = DecisionKind(decision)
    _check_target(target, kind)
    _check_length("label", label, LABEL_LIMIT)
    _check_length("model version", model_version, MODEL_VERSION_LIMIT)
    values = {"decision": kind.value, "label": label, "geometry": geometry, "model_version": model_version,
              "user_id": user_id, "at": now}
    with write(engine) as conn:
        _lock_in_review(conn, review_id, "decided on", now)
        where = (_decisions.c.review_id == review_id) & (_decisions.c.target == target)
        if conn.execute(select(_decisions.c.id).where(where)).first() is None:
            conn.execute(insert(_decisions).values(review_id=review_id, target=target, **values))
        else:
            conn.execute(update(_decisions).where(where).values(**values))
        user_name = conn.execute(select(_users.c.name).where(_users.c.id == user_id)).scalar_one()
    return Decision(target, kind, label, geometry, model_version, user_id, user_name, now)


def remove_decision(engine: Engine, review_id: int, target: str, now: float | None = None) -> bool:
    """Undo the decision on ``target`` (False when there was none); :class:`ReviewStateError` when the review is
    not in review. ``now``, when given, becomes the review's ``updated_at``."""
    with write(engine) as conn:
        _lock_in_review(conn, review_id, "changed", now)
        removed = conn.execute(delete(_decisions).where(
            (_decisions.c.review_id == review_id) & (_decisions.c.target == target)))
    return bool(removed.rowcount)


def decisions(engine: Engine, review_id: int) -> list[Decision]:
    """The review's decisions, by target (detections, then lesions, then added ones; each by number)."""
    query = (select(_decisions, _users.c.name.label("user_name"))
             .join_from(_decisions, _users, _decisions.c.user_id == _users.c.id)
             .where(_decisions.c.review_id == review_id))
    with read(engine) as conn:
        found = [_decision_from_row(row) for row in conn.execute(query).mappings()]
    return sorted(found, key=lambda d: _target_key(d.target))


def next_added_target(engine: Engine, review_id: int) -> str:
    """The target for the next finding the reviewer adds: ``"a:<n>"``, one past the highest added so far."""
    with read(engine) as conn:
        targets = conn.execute(select(_decisions.c.target).where(
            (_decisions.c.review_id == review_id) & _decisions.c.target.like("a:%"))).scalars()
        highest = max((_target_key(t)[1] for t in targets if TARGET.match(t)), default=0)
    return f"a:{highest + 1}"


def sign_off(engine: Engine, review_id: int, user_id: int, result: Mapping[str, Any], note: str | None,
             now: float) -> Review:
    """Make the review final: signed off by ``user_id`` at ``now`` with the confirmed figures and a note; the
    job's version it replaces (signed off before a reopen) becomes superseded. :class:`ReviewStateError` unless
    the review is in review (so of two concurrent sign-offs one fails); ValueError for an over-long note."""
    _check_length("note", note, NOTE_LIMIT)
    with write(engine) as conn:
        review = _lock_in_review(conn, review_id, "signed off", None)
        conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(
            status=ReviewStatus.SIGNED_OFF.value, signed_at=now, signed_by=user_id, result=dict(result),
            note=None if note is None else escape_nul(note), updated_at=now))
        conn.execute(update(_reviews).where(
            (_reviews.c.job_id == review.job_id) & (_reviews.c.version < review.version)
            & (_reviews.c.status == ReviewStatus.SIGNED_OFF.value)).values(
            status=ReviewStatus.SUPERSEDED.value, updated_at=now))
        return _get(conn, review_id)


def set_note(engine: Engine, review_id: int, note: str | None, now: float) -> Review:
    """Set the reviewer's note while the case is in review (a sign-off may replace it). ValueError for an
    over-long note; :class:`ReviewStateError` when the review is not in review."""
    _check_length("note", note, NOTE_LIMIT)
    with write(engine) as conn:
        _lock_in_review(conn, review_id, "annotated", None)
        conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(
            note=None if note is None else escape_nul(note), updated_at=now))
        return _get(conn, review_id)


def set_sr_uid(engine: Engine, review_id: int, uid: str) -> None:
    """Record the SOP Instance UID of the verified SR made from the signed review."""
    _check_length("SOP Instance UID", uid, UID_LIMIT)
    with write(engine) as conn:
        changed = conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(sr_sop_instance_uid=uid))
        if not changed.rowcount:
            raise StoreError(f"no review {review_id}")


# ------------------------------------------------------------------------------------------- helpers


def _lock_job(conn: Connection, job_id: int, *, need_result: bool) -> None:
    """Lock the job's row: the reviews of one job change one transaction at a time (one version 1, one n+1)."""
    status = conn.execute(locked(select(schema.jobs.c.status).where(schema.jobs.c.id == job_id))).scalar()
    if status is None:
        raise StoreError(f"no job {job_id}")
    if need_result and status != JobStatus.SUCCEEDED.value:
        raise ReviewStateError(f"job {job_id} has no result to review: it is {status}")


def _lock_in_review(conn: Connection, review_id: int, what: str, now: float | None) -> Review:
    """The review, its row locked; :class:`ReviewStateError` unless it is in review. ``now``: touch it."""
    row = conn.execute(locked(select(_reviews).where(_reviews.c.id == review_id))).mappings().first()
    if row is None:
        raise StoreError(f"no review {review_id}")
    if row["status"] != ReviewStatus.IN_REVIEW.value:
        raise ReviewStateError(f"review {review_id} (job {row['job_id']}, version {row['version']}) is "
                               f"{row['status']}: it cannot be {what}")
    if now is not None:
        conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(updated_at=now))
    return _get(conn, review_id)


def _latest(conn: Connection, job_id: int) -> Review | None:
    query = _review_query().where(_reviews.c.job_id == job_id).order_by(_reviews.c.version.desc()).limit(1)
    row = conn.execute(query).mappings().first()
    return None if row is None else _review_from_row(row)


def _get(conn: Connection, review_id: int) -> Review:
    row = conn.execute(_review_query().where(_reviews.c.id == review_id)).mappings().first()
    if row is None:
        raise StoreError(f"no review {review_id}")
    return _review_from_row(row)


def _review_query() -> Select[Any]:
    holder, signer = aliased(_users), aliased(_users)
    return (select(_reviews, holder.c.name.label("holder_name"), signer.c.name.label("signed_by_name"))
            .outerjoin(holder, holder.c.id == _reviews.c.holder_id)
            .outerjoin(signer, signer.c.id == _reviews.c.signed_by))


def _review_from_row(row: RowMapping) -> Review:
    return Review(
        id=row["id"], job_id=row["job_id"], version=row["version"], status=ReviewStatus(row["status"]),
        holder_id=row["holder_id"], holder_name=row["holder_name"], started_at=row["started_at"],
        updated_at=row["updated_at"], signed_at=row["signed_at"], signed_by=row["signed_by"],
        signed_by_name=row["signed_by_name"], note=row["note"], result=row["result"],
        sr_sop_instance_uid=row["sr_sop_instance_uid"],
    )


def _decision_from_row(row: RowMapping) -> Decision:
    return Decision(row["target"], DecisionKind(row["decision"]), row["label"], row["geometry"],
                    row["model_version"], row["user_id"], row["user_name"], row["at"])


def _check_target(target: str, kind: DecisionKind) -> None:
    match = TARGET.match(target)
    if not match:
        raise ValueError(f"{target[:40]!r} is not a target: 'd:<index>', 'l:<n>' or 'a:<n>'")
    if (match.group(1) == "a") != (kind is DecisionKind.ADDED):
        raise ValueError(f"{target}: an added finding's target is 'a:<n>' (next_added_target), and only it is added")


def _target_key(target: str) -> tuple[int, int]:
    match = TARGET.match(target)
    return ("dla".index(match.group(1)), int(match.group(2))) if match else (3, 0)


def _check_length(what: str, text: str | None, limit: int) -> None:
    if text is not None and len(text) > limit:
        raise ValueError(f"a {what} has at most {limit} characters")
