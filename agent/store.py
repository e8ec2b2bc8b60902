"""The job store: the only module that speaks SQL.

SQLite (WAL, synchronous=FULL, immediate write transactions) by default; PostgreSQL by URL. Everything that
must survive a crash goes through here: received instances, inputs (series and slides), jobs with their
attempts and errors, the event journal and the outbox. Timestamps are seconds since the epoch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, create_engine, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from agent import schema
from agent.config import Priority
from agent.errors import StoreError
from agent.records import (
    Delivery,
    Input,
    InputKind,
    InputState,
    Instance,
    Job,
    JobStatus,
    OutboxItem,
    OutboxStatus,
)

log = logging.getLogger(__name__)

ERROR_TEXT_LIMIT = 4000


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"job store write failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as plain:
                conn = plain.execution_options(oncoagent_readonly=True)
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"job store read failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}") from exc

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version now in force."""
        with self._write() as conn:
            version = self._schema_version(conn)
            if version is None:
                schema.metadata.create_all(conn)
                conn.execute(insert(schema.schema_info).values(id=1, version=schema.SCHEMA_VERSION))
                log.info("created job store schema v%d", schema.SCHEMA_VERSION)
                return schema.SCHEMA_VERSION
            if version > schema.SCHEMA_VERSION:
                raise StoreError(
                    f"database schema v{version} is newer than this OncoAgent (v{schema.SCHEMA_VERSION}); "
                    "upgrade OncoAgent or use another --data-dir"
                )
            while version < schema.SCHEMA_VERSION:
                schema.MIGRATIONS[version](conn)
                version += 1
                conn.execute(update(schema.schema_info).values(version=version))
                log.info("migrated job store schema to v%d", version)
            return version

    @staticmethod
    def _schema_version(conn: Connection) -> int | None:
        if not conn.dialect.has_table(conn, "schema_info"):
            return None
        return conn.execute(select(schema.schema_info.c.version)).scalar_one_or_none()

    # ----------------------------------------------------------------------------------- instances

    def add_instance(self, inst: Instance) -> bool:
        """Record a stored DICOM instance and its series; False when the SOP Instance UID was known."""
        return self.add_instances([inst])[0]

    def add_instances(self, insts: Sequence[Instance]) -> list[bool]:
        """Record several instances in one transaction (one commit); for each, whether it was new.

        The series fingerprint is the XOR of its instances' UID hashes, updated in place, so recording an
        instance costs the same whatever the series size.
        """
        now = time.time()
        with self._write() as conn:
            return [self._record_instance(conn, inst, now) for inst in insts]

    @staticmethod
    def _record_instance(conn: Connection, inst: Instance, now: float) -> bool:
        known = conn.execute(
            select(schema.instances.c.id).where(schema.instances.c.sop_instance_uid == inst.sop_instance_uid)
        ).first()
        if known is not None:
            return False
        row = (
            conn.execute(
                select(schema.inputs.c.id, schema.inputs.c.fingerprint, schema.inputs.c.instance_count).where(
                    schema.inputs.c.key == inst.series_uid
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            input_id = _insert(
                conn,
                insert(schema.inputs).values(
                    kind=InputKind.DICOM_SERIES.value,
                    key=inst.series_uid,
                    path=str(inst.path.parent),
                    study_uid=inst.study_uid,
                    series_uid=inst.series_uid,
                    fingerprint=EMPTY_FINGERPRINT,
                    attrs=inst.attrs,
                    instance_count=0,
                    state=InputState.RECEIVING.value,
                    created_at=now,
                    updated_at=now,
                ),
            )
            fingerprint, count = EMPTY_FINGERPRINT, 0
        else:
            input_id, fingerprint, count = row["id"], row["fingerprint"], row["instance_count"]
        conn.execute(
            insert(schema.instances).values(
                sop_instance_uid=inst.sop_instance_uid,
                sop_class_uid=inst.sop_class_uid,
                study_uid=inst.study_uid,
                series_uid=inst.series_uid,
                input_id=input_id,
                path=str(inst.path),
                size=inst.size,
                source=inst.source,
                received_at=now,
            )
        )
        conn.execute(
            update(schema.inputs)
            .where(schema.inputs.c.id == input_id)
            .values(
                instance_count=count + 1,
                fingerprint=_xor_fingerprint(fingerprint, inst.sop_instance_uid),
                state=InputState.RECEIVING.value,
                reason=None,
                updated_at=now,
            )
        )
        return True

    def has_instance(self, sop_instance_uid: str) -> bool:
        with self._read() as conn:
            return (
                conn.execute(
                    select(schema.instances.c.id).where(schema.instances.c.sop_instance_uid == sop_instance_uid)
                ).first()
                is not None
            )

    def instance_paths(self, input_id: int) -> list[Path]:
        with self._read() as conn:
            rows = conn.execute(
                select(schema.instances.c.path)
                .where(schema.instances.c.input_id == input_id)
                .order_by(schema.instances.c.id)
            ).scalars()
            return [Path(p) for p in rows]

    # ----------------------------------------------------------------------------------- inputs

    def upsert_file_input(
        self, kind: InputKind, path: Path, fingerprint: str, attrs: Mapping[str, Any]
    ) -> tuple[Input, bool]:
        """Record a file input (a slide); return it and whether it is new or changed since last seen."""
        key = str(path.resolve())
        now = time.time()
        with self._write() as conn:
            row = conn.execute(select(schema.inputs).where(schema.inputs.c.key == key)).mappings().first()
            if row is not None and row["fingerprint"] == fingerprint:
                return _input(row), False
            values = {
                "kind": kind.value,
                "path": key,
                "fingerprint": fingerprint,
                "attrs": dict(attrs),
                "instance_count": 1,
                "state": InputState.RECEIVING.value,
                "reason": None,
                "updated_at": now,
            }
            if row is None:
                conn.execute(insert(schema.inputs).values(key=key, created_at=now, **values))
            else:
                conn.execute(update(schema.inputs).where(schema.inputs.c.id == row["id"]).values(**values))
            fresh = conn.execute(select(schema.inputs).where(schema.inputs.c.key == key)).mappings().one()
            return _input(fresh), True

    def get_input(self, input_id: int) -> Input:
        with self._read() as conn:
            row = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().first()
        if row is None:
            raise StoreError(f"no input {input_id}")
        return _input(row)

    def find_input(self, key: str) -> Input | None:
        with self._read() as conn:
            row = conn.execute(select(schema.inputs).where(schema.inputs.c.key == key)).mappings().first()
        return None if row is None else _input(row)

    def receiving_inputs(self, quiet_before: float) -> list[Input]:
        """Inputs still receiving whose last change is older than ``quiet_before``."""
        with self._read() as conn:
            rows = conn.execute(
                select(schema.inputs)
                .where(schema.inputs.c.state == InputState.RECEIVING.value)
                .where(schema.inputs.c.updated_at <= quiet_before)
                .order_by(schema.inputs.c.id)
            ).mappings()
            return [_input(r) for r in rows]

    def list_inputs(self, limit: int = 100) -> list[Input]:
        with self._read() as conn:
            rows = conn.execute(select(schema.inputs).order_by(schema.inputs.c.id.desc()).limit(limit)).mappings()
            return [_input(r) for r in rows]

    def set_context(self, input_id: int, context: Mapping[str, Any], source: str | None) -> Input:
        """Replace a slide's patient/study context (``attrs["context"]``), e.g. from a sidecar added later."""
        with self._write() as conn:
            row = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().first()
            if row is None:
                raise StoreError(f"no input {input_id}")
            attrs = {k: v for k, v in dict(row["attrs"] or {}).items() if k not in ("context", "context_source")}
            if context:
                attrs |= {"context": dict(context), "context_source": source}
            conn.execute(update(schema.inputs).where(schema.inputs.c.id == input_id).values(attrs=attrs))
            self._event(conn, "context", input_id=input_id, detail=f"context from {source or 'nothing'}")
            fresh = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().one()
            return _input(fresh)

    def mark_ignored(self, input_id: int, reason: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(schema.inputs)
                .where(schema.inputs.c.id == input_id)
                .values(state=InputState.IGNORED.value, reason=reason[:ERROR_TEXT_LIMIT], updated_at=time.time())
            )
            self._event(conn, "ignored", input_id=input_id, detail=reason)

    # ----------------------------------------------------------------------------------- jobs

    def enqueue(
        self,
        input_id: int,
        pipeline: str,
        pipeline_version: str,
        *,
        priority: Priority = Priority.ROUTINE,
        max_attempts: int = 3,
        rule: str | None = None,
        force: bool = False,
    ) -> tuple[Job, bool]:
        """Queue a job for the input's current content; return (job, queued_now).

        One job exists per (input, pipeline, version, input fingerprint): a job that succeeded is never queued
        again for the same content and version unless ``force`` (explicit reprocessing); a queued or running
        one is returned as it is. A failed or cancelled one is only re-queued with ``force``.
        """
        now = time.time()
        with self._write() as conn:
            inp = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().first()
            if inp is None:
                raise StoreError(f"no input {input_id}")
            conn.execute(
                update(schema.inputs)
                .where(schema.inputs.c.id == input_id)
                .values(state=InputState.ROUTED.value, reason=None, updated_at=inp["updated_at"])
            )
            existing = (
                conn.execute(
                    select(schema.jobs).where(
                        schema.jobs.c.input_id == input_id,
                        schema.jobs.c.pipeline == pipeline,
                        schema.jobs.c.pipeline_version == pipeline_version,
                        schema.jobs.c.input_fingerprint == inp["fingerprint"],
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                status = JobStatus(existing["status"])
                if not force or status in (JobStatus.QUEUED, JobStatus.RUNNING):
                    return _job(existing), False
                conn.execute(
                    update(schema.jobs)
                    .where(schema.jobs.c.id == existing["id"])
                    .values(
                        status=JobStatus.QUEUED.value,
                        priority=int(priority),
                        attempts=0,
                        max_attempts=max_attempts,
                        last_error=None,
                        not_before=0.0,
                        updated_at=now,
                        finished_at=None,
                        rule=rule,
                    )
                )
                self._event(conn, "requeued", job_id=existing["id"], detail=f"reprocess (was {status.value})")
                return self._job_in(conn, existing["id"]), True
            try:
                with conn.begin_nested():
                    job_id = _insert(
                        conn,
                        insert(schema.jobs).values(
                            input_id=input_id,
                            pipeline=pipeline,
                            pipeline_version=pipeline_version,
                            input_fingerprint=inp["fingerprint"],
                            rule=rule,
                            status=JobStatus.QUEUED.value,
                            priority=int(priority),
                            attempts=0,
                            max_attempts=max_attempts,
                            not_before=0.0,
                            created_at=now,
                            updated_at=now,
                            models=[],
                        ),
                    )
            except IntegrityError as exc:  # a concurrent enqueue won the race on another connection
                raise StoreError(f"job for input {input_id} was queued concurrently") from exc
            self._event(conn, "queued", job_id=job_id, input_id=input_id, detail=f"{pipeline} {pipeline_version}")
            return self._job_in(conn, job_id), True

    def claim(self, now: float | None = None) -> Job | None:
        """Take the next runnable job (highest priority, then oldest) and mark it running."""
        now = time.time() if now is None else now
        with self._write() as conn:
            row = conn.execute(
                select(schema.jobs.c.id)
                .where(schema.jobs.c.status == JobStatus.QUEUED.value, schema.jobs.c.not_before <= now)
                .order_by(schema.jobs.c.priority, schema.jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id == row.id)
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=schema.jobs.c.attempts + 1,
                    started_at=now,
                    updated_at=now,
                )
            )
            self._event(conn, "started", job_id=row.id)
            return self._job_in(conn, row.id)

    def succeed(
        self,
        job_id: int,
        result_path: Path,
        summary: Mapping[str, Any],
        models: Sequence[Mapping[str, str]],
        deliveries: Sequence[Delivery] = (),
        unsent_reason: str | None = None,
    ) -> Job:
        """Record a job's success together with the outbox entries of its DICOM objects, in one transaction:
        a crash leaves either both or neither."""
        now = time.time()
        with self._write() as conn:
            self._require_status(conn, job_id, JobStatus.RUNNING)
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id == job_id)
                .values(
                    status=JobStatus.SUCCEEDED.value,
                    result_path=str(result_path),
                    summary=dict(summary),
                    models=[dict(m) for m in models],
                    last_error=None,
                    unsent_reason=None if unsent_reason is None else unsent_reason[:ERROR_TEXT_LIMIT],
                    finished_at=now,
                    updated_at=now,
                )
            )
            queued = sum(self._outbox_put(conn, d, job_id, now)[1] for d in deliveries)
            detail = str(result_path) + (f"; {queued} object(s) queued for PACS" if queued else "")
            self._event(conn, "succeeded", job_id=job_id, detail=detail)
            return self._job_in(conn, job_id)

    def fail(self, job_id: int, error: str, *, retry_at: float | None = None) -> Job:
        """Record a failed attempt: re-queue at ``retry_at`` when attempts remain, else fail for good."""
        now = time.time()
        error = error[:ERROR_TEXT_LIMIT]
        with self._write() as conn:
            job = self._require_status(conn, job_id, JobStatus.RUNNING)
            retry = retry_at is not None and job.attempts < job.max_attempts
            values: dict[str, Any] = {"last_error": error, "updated_at": now}
            if retry:
                values |= {"status": JobStatus.QUEUED.value, "not_before": retry_at}
            else:
                values |= {"status": JobStatus.FAILED.value, "finished_at": now}
            conn.execute(update(schema.jobs).where(schema.jobs.c.id == job_id).values(**values))
            self._event(conn, "retry" if retry else "failed", job_id=job_id, detail=error)
            return self._job_in(conn, job_id)

    def requeue_running(self, reason: str) -> list[int]:
        """Put jobs left ``running`` (by a crash or a stop) back in the queue; return their ids."""
        now = time.time()
        with self._write() as conn:
            ids = list(
                conn.execute(select(schema.jobs.c.id).where(schema.jobs.c.status == JobStatus.RUNNING.value)).scalars()
            )
            if ids:
                conn.execute(
                    update(schema.jobs)
                    .where(schema.jobs.c.id.in_(ids))
                    .values(
                        status=JobStatus.QUEUED.value,
                        attempts=func.max(schema.jobs.c.attempts - 1, 0)
                        if conn.dialect.name == "sqlite"
                        else func.greatest(schema.jobs.c.attempts - 1, 0),
                        not_before=0.0,
                        updated_at=now,
                    )
                )
                for job_id in ids:
                    self._event(conn, "requeued", job_id=job_id, detail=reason)
            return ids

    def retry(self, job_id: int) -> Job:
        """Manual retry of a failed or cancelled job, or of a succeeded one whose findings were not sent."""
        now = time.time()
        with self._write() as conn:
            job = self._job_in(conn, job_id)
            unsent = job.status is JobStatus.SUCCEEDED and job.unsent_reason is not None
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED) and not unsent:
                raise StoreError(f"job {job_id} is {job.status.value}; only failed or cancelled jobs, or succeeded "
                                 "ones whose results were not sent, can be retried")
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id == job_id)
                .values(status=JobStatus.QUEUED.value, attempts=0, not_before=0.0, finished_at=None, updated_at=now)
            )
            self._event(conn, "requeued", job_id=job_id, detail="manual retry")
            return self._job_in(conn, job_id)

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job. Running jobs are not interrupted; cancel them once they end."""
        now = time.time()
        with self._write() as conn:
            job = self._job_in(conn, job_id)
            if job.status is not JobStatus.QUEUED:
                raise StoreError(f"job {job_id} is {job.status.value}; only queued jobs can be cancelled")
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id == job_id)
                .values(status=JobStatus.CANCELLED.value, finished_at=now, updated_at=now)
            )
            self._event(conn, "cancelled", job_id=job_id)
            return self._job_in(conn, job_id)

    def get_job(self, job_id: int) -> Job:
        with self._read() as conn:
            return self._job_in(conn, job_id)

    def job_summary(self, job_id: int) -> dict[str, Any] | None:
        with self._read() as conn:
            value = conn.execute(select(schema.jobs.c.summary).where(schema.jobs.c.id == job_id)).scalar()
            return dict(value) if value else None

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        query = select(schema.jobs).order_by(schema.jobs.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(schema.jobs.c.status == status.value)
        with self._read() as conn:
            return [_job(r) for r in conn.execute(query).mappings()]

    def list_unsent(self, limit: int = 100) -> list[Job]:
        """Succeeded jobs whose findings were kept locally (no patient context), newest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(schema.jobs)
                .where(schema.jobs.c.status == JobStatus.SUCCEEDED.value, schema.jobs.c.unsent_reason.is_not(None))
                .order_by(schema.jobs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [_job(r) for r in rows]

    def jobs_for_input(self, input_id: int) -> list[Job]:
        with self._read() as conn:
            rows = conn.execute(
                select(schema.jobs).where(schema.jobs.c.input_id == input_id).order_by(schema.jobs.c.id)
            ).mappings()
            return [_job(r) for r in rows]

    def latest_success(self, input_id: int, pipeline: str, before_job_id: int | None = None) -> Job | None:
        """The most recently finished successful job of ``pipeline`` on the input (other than ``before_job_id``)."""
        query = (
            select(schema.jobs)
            .where(
                schema.jobs.c.input_id == input_id,
                schema.jobs.c.pipeline == pipeline,
                schema.jobs.c.status == JobStatus.SUCCEEDED.value,
            )
            .order_by(schema.jobs.c.finished_at.desc())
            .limit(1)
        )
        if before_job_id is not None:
            query = query.where(schema.jobs.c.id != before_job_id)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
            return None if row is None else _job(row)

    def next_due(self) -> float | None:
        """When the earliest queued job becomes runnable (None when the queue is empty)."""
        with self._read() as conn:
            value = conn.execute(
                select(func.min(schema.jobs.c.not_before)).where(schema.jobs.c.status == JobStatus.QUEUED.value)
            ).scalar()
            return None if value is None else float(value)

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(schema.events).where(schema.events.c.job_id == job_id).order_by(schema.events.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    # ----------------------------------------------------------------------------------- outbox

    def outbox_add(
        self, destination: str, path: Path, sop_class_uid: str, sop_instance_uid: str, job_id: int | None = None
    ) -> tuple[OutboxItem, bool]:
        """Queue an object for a destination; return (item, queued_now).

        One entry per (destination, SOP Instance UID): an object already sent or waiting is not queued twice;
        a failed or cancelled one, or a new file for the same UID (a superseding result), is queued again.
        """
        with self._write() as conn:
            return self._outbox_put(conn, Delivery(destination, path, sop_class_uid, sop_instance_uid), job_id,
                                    time.time())

    def _outbox_put(self, conn: Connection, d: Delivery, job_id: int | None, now: float) -> tuple[OutboxItem, bool]:
        row = (
            conn.execute(
                select(schema.outbox).where(
                    schema.outbox.c.destination == d.destination, schema.outbox.c.sop_instance_uid == d.sop_instance_uid
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            item_id = _insert(
                conn,
                insert(schema.outbox).values(
                    job_id=job_id,
                    destination=d.destination,
                    path=str(d.path),
                    sop_class_uid=d.sop_class_uid,
                    sop_instance_uid=d.sop_instance_uid,
                    status=OutboxStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=0.0,
                    created_at=now,
                    updated_at=now,
                ),
            )
            return self._outbox_in(conn, item_id), True
        same_file = row["path"] == str(d.path)
        if row["status"] in (OutboxStatus.PENDING.value, OutboxStatus.SENT.value) and same_file:
            return _outbox(row), False
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.id == row["id"])
            .values(
                job_id=job_id,
                path=str(d.path),
                sop_class_uid=d.sop_class_uid,
                status=OutboxStatus.PENDING.value,
                attempts=0,
                last_status=None,
                last_error=None,
                next_attempt_at=0.0,
                updated_at=now,
                sent_at=None,
            )
        )
        return self._outbox_in(conn, row["id"]), True

    def outbox_due(self, now: float | None = None, limit: int = 500) -> list[OutboxItem]:
        now = time.time() if now is None else now
        with self._read() as conn:
            rows = conn.execute(
                select(schema.outbox)
                .where(schema.outbox.c.status == OutboxStatus.PENDING.value, schema.outbox.c.next_attempt_at <= now)
                .order_by(schema.outbox.c.destination, schema.outbox.c.id)
                .limit(limit)
            ).mappings()
            return [_outbox(r) for r in rows]

    def outbox_sent(self, item_id: int, status: int) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.id == item_id)
                .values(
                    status=OutboxStatus.SENT.value,
                    last_status=status,
                    last_error=None,
                    attempts=schema.outbox.c.attempts + 1,
                    sent_at=now,
                    updated_at=now,
                )
            )

    def outbox_failed(
        self, item_id: int, error: str, *, status: int | None = None, retry_at: float | None = None
    ) -> OutboxItem:
        """Record a failed attempt: pending again at ``retry_at``, or failed for good when it is None."""
        now = time.time()
        with self._write() as conn:
            values: dict[str, Any] = {
                "last_error": error[:ERROR_TEXT_LIMIT],
                "last_status": status,
                "updated_at": now,
                "attempts": schema.outbox.c.attempts + 1,
            }
            if retry_at is None:
                values["status"] = OutboxStatus.FAILED.value
            else:
                values["next_attempt_at"] = retry_at
            conn.execute(update(schema.outbox).where(schema.outbox.c.id == item_id).values(**values))
            return self._outbox_in(conn, item_id)

    def outbox_substitute(
        self, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str
    ) -> OutboxItem:
        """Send another object in place of this entry's (a fallback the destination accepts), at once."""
        with self._write() as conn:
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.id == item_id)
                .values(
                    path=str(path), sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                    status=OutboxStatus.PENDING.value, next_attempt_at=0.0, note=note[:ERROR_TEXT_LIMIT],
                    updated_at=time.time(),
                )
            )
            return self._outbox_in(conn, item_id)

    def outbox_retry(self, item_id: int) -> OutboxItem:
        with self._write() as conn:
            item = self._outbox_in(conn, item_id)
            if item.status not in (OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.PENDING):
                raise StoreError(f"outbox item {item_id} is {item.status.value}; it was delivered already")
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.id == item_id)
                .values(status=OutboxStatus.PENDING.value, attempts=0, next_attempt_at=0.0, updated_at=time.time())
            )
            return self._outbox_in(conn, item_id)

    def outbox_cancel(self, item_id: int) -> OutboxItem:
        with self._write() as conn:
            item = self._outbox_in(conn, item_id)
            if item.status is not OutboxStatus.PENDING:
                raise StoreError(f"outbox item {item_id} is {item.status.value}; only pending items can be cancelled")
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.id == item_id)
                .values(status=OutboxStatus.CANCELLED.value, updated_at=time.time())
            )
            return self._outbox_in(conn, item_id)

    def outbox_list(self, status: OutboxStatus | None = None, limit: int = 100) -> list[OutboxItem]:
        query = select(schema.outbox).order_by(schema.outbox.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(schema.outbox.c.status == status.value)
        with self._read() as conn:
            return [_outbox(r) for r in conn.execute(query).mappings()]

    def outbox_next_due(self) -> float | None:
        with self._read() as conn:
            value = conn.execute(
                select(func.min(schema.outbox.c.next_attempt_at)).where(
                    schema.outbox.c.status == OutboxStatus.PENDING.value
                )
            ).scalar()
            return None if value is None else float(value)

    def _outbox_in(self, conn: Connection, item_id: int) -> OutboxItem:
        row = conn.execute(select(schema.outbox).where(schema.outbox.c.id == item_id)).mappings().first()
        if row is None:
            raise StoreError(f"no outbox item {item_id}")
        return _outbox(row)

    # ----------------------------------------------------------------------------------- status

    def counts(self) -> dict[str, Any]:
        with self._read() as conn:
            jobs = _grouped(conn, schema.jobs.c.status)
            inputs = _grouped(conn, schema.inputs.c.kind)
            states = _grouped(conn, schema.inputs.c.state)
            outbox = _grouped(conn, schema.outbox.c.status)
            instances = conn.execute(select(func.count()).select_from(schema.instances)).scalar_one()
            unsent = conn.execute(
                select(func.count()).select_from(schema.jobs).where(
                    schema.jobs.c.status == JobStatus.SUCCEEDED.value, schema.jobs.c.unsent_reason.is_not(None)
                )
            ).scalar_one()
        return {
            "instances": instances,
            "series": inputs.get(InputKind.DICOM_SERIES.value, 0),
            "slides": inputs.get(InputKind.SLIDE.value, 0),
            "inputs_by_state": {s.value: states.get(s.value, 0) for s in InputState},
            "jobs": {s.value: jobs.get(s.value, 0) for s in JobStatus},
            "outbox": outbox,
            "results_unsent": unsent,
        }

    # ----------------------------------------------------------------------------------- helpers

    def _job_in(self, conn: Connection, job_id: int) -> Job:
        row = conn.execute(select(schema.jobs).where(schema.jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise StoreError(f"no job {job_id}")
        return _job(row)

    def _require_status(self, conn: Connection, job_id: int, status: JobStatus) -> Job:
        job = self._job_in(conn, job_id)
        if job.status is not status:
            raise StoreError(f"job {job_id} is {job.status.value}, expected {status.value}")
        return job

    @staticmethod
    def _event(
        conn: Connection,
        name: str,
        *,
        job_id: int | None = None,
        input_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            insert(schema.events).values(
                at=time.time(),
                job_id=job_id,
                input_id=input_id,
                event=name,
                detail=None if detail is None else detail[:ERROR_TEXT_LIMIT],
            )
        )


def _insert(conn: Connection, statement: Any) -> int:
    """Run an INSERT and return the new row's id."""
    key = conn.execute(statement).inserted_primary_key
    if key is None:
        raise StoreError("the database returned no id for a new row")
    return int(key[0])


def _grouped(conn: Connection, column: Any) -> dict[str, int]:
    """Row counts by the values of ``column``."""
    return {key: count for key, count in conn.execute(select(column, func.count()).group_by(column))}


EMPTY_FINGERPRINT = "0" * 32


def _xor_fingerprint(fingerprint: str, uid: str) -> str:
    """Order-independent set hash: XOR of 128-bit UID hashes (adding a UID twice would cancel; we never do)."""
    value = int(fingerprint, 16) ^ int(hashlib.sha256(uid.encode()).hexdigest()[:32], 16)
    return f"{value:032x}"


def _input(row: RowMapping) -> Input:
    return Input(
        id=row["id"],
        kind=InputKind(row["kind"]),
        key=row["key"],
        path=Path(row["path"]),
        fingerprint=row["fingerprint"],
        attrs=dict(row["attrs"] or {}),
        instance_count=row["instance_count"],
        state=InputState(row["state"]),
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
    )


def _job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        input_id=row["input_id"],
        pipeline=row["pipeline"],
        pipeline_version=row["pipeline_version"],
        input_fingerprint=row["input_fingerprint"],
        status=JobStatus(row["status"]),
        priority=Priority(row["priority"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        not_before=row["not_before"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rule=row["rule"],
        result_path=Path(row["result_path"]) if row["result_path"] else None,
        models=list(row["models"] or []),
        unsent_reason=row["unsent_reason"],
    )


def _outbox(row: RowMapping) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        job_id=row["job_id"],
        destination=row["destination"],
        path=Path(row["path"]),
        sop_class_uid=row["sop_class_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        status=OutboxStatus(row["status"]),
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        note=row["note"],
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers, FULL sync for durability, and immediate write transactions.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one that runs:
    writers take the lock at BEGIN (no deadlock on lock upgrade), readers use a deferred BEGIN.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        except Exception as exc:
            raise StoreError(f"cannot configure SQLite database: {exc}") from exc
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("oncoagent_readonly", False)
        try:
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
        except OperationalError as exc:
            raise StoreError(f"job store busy or unavailable: {exc.orig}") from exc
