"""Databases as the releases before Alembic made them: the schema their own counter (``schema_info``) called
version 5, captured from the last of them (store_v5_sql/<dialect>.sql), and the earlier versions 1 to 4 made from it
by taking away what each later version added. Rows are written with plain SQL in that schema's columns, so
they do not follow agent/store/schema.py as it changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

from agent.store.engine import open_engine

SQL = Path(__file__).with_name("store_v5_sql")

ADDED_BY_VERSION = {  # what version n added to version n - 1, undone to make version n - 1
    5: ("DROP TABLE associations",),
    4: ("ALTER TABLE inputs DROP COLUMN purged_at", "ALTER TABLE jobs DROP COLUMN purged_at"),
    3: ("ALTER TABLE jobs DROP COLUMN unsent_reason",),
    2: ("ALTER TABLE outbox DROP COLUMN note",),
}

TABLES_WITH_ROWS = ("inputs", "instances", "jobs", "events", "outbox", "associations")

ROWS: dict[str, dict[str, Any]] = {
    "inputs": {"id": 7, "kind": "dicom-series", "key": "1.2.3.4", "path": "/data/storage/1.2.3/1.2.3.4",
               "study_uid": "1.2.3", "series_uid": "1.2.3.4", "fingerprint": "f1",
               "attrs": json.dumps({"Modality": "MR"}), "instance_count": 1, "state": "routed", "reason": None,
               "created_at": 100.0, "updated_at": 101.0, "purged_at": None},
    "instances": {"id": 3, "sop_instance_uid": "1.2.3.4.1", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                  "study_uid": "1.2.3", "series_uid": "1.2.3.4", "input_id": 7,
                  "path": "/data/storage/1.2.3/1.2.3.4/1.2.3.4.1.dcm", "size": 3_000_000_000,
                  "source": "scp:MODALITY", "received_at": 100.5},
    "jobs": {"id": 11, "input_id": 7, "pipeline": "mri-tumour", "pipeline_version": "1.0",
             "input_fingerprint": "f1", "rule": "mr", "status": "succeeded", "priority": 1, "attempts": 1,
             "max_attempts": 3, "last_error": None, "not_before": 0.0, "created_at": 102.0, "updated_at": 110.0,
             "started_at": 103.0, "finished_at": 110.0, "result_path": "/data/results/11",
             "summary": json.dumps({"lesions": 1}), "models": json.dumps([{"name": "m", "version": "1"}]),
             "unsent_reason": None, "purged_at": None},
    "events": {"id": 5, "at": 110.0, "job_id": 11, "input_id": 7, "event": "succeeded", "detail": "done"},
    "outbox": {"id": 2, "job_id": 11, "destination": "pacs", "path": "/data/results/11/sr.dcm",
               "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.33", "sop_instance_uid": "2.25.42", "status": "sent",
               "attempts": 1, "last_status": 0, "last_error": None, "next_attempt_at": 0.0, "created_at": 110.0,
               "updated_at": 111.0, "sent_at": 111.0, "note": None},
    "associations": {"id": 4, "started_at": 99.0, "ended_at": 100.9, "calling_ae": "MODALITY",
                     "called_ae": "ONCOAGENT", "address": "127.0.0.1", "refusal": None, "detail": None,
                     "instances_stored": 1},
}
"""One row per table that holds data, in version 5's columns (a version before 5 lacks some of them)."""


def create_legacy_database(url: str, version: int = 5) -> None:
    """Give the empty database at ``url`` the schema of the old counter at ``version``, stamped so in
    ``schema_info``, and one row in every table that holds data (:data:`ROWS`, in the columns it has)."""
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            for statement in (SQL / f"{engine.dialect.name}.sql").read_text(encoding="utf-8").split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            for later in range(5, version, -1):
                for statement in ADDED_BY_VERSION[later]:
                    conn.exec_driver_sql(statement)
            conn.execute(text("UPDATE schema_info SET version = :v"), {"v": version})
            for table, row in ROWS.items():
                if table in present_tables(conn):
                    kept = {k: v for k, v in row.items() if k in columns(conn, table)}
                    conn.execute(text(f"INSERT INTO {table} ({', '.join(kept)}) "
                                      f"VALUES ({', '.join(':' + k for k in kept)})"), kept)
    finally:
        engine.dispose()


def present_tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def columns(conn: Connection, table: str) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns(table)]


def rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables that hold data, in the columns :data:`ROWS` names (JSON read back as text on
    SQLite and as values on PostgreSQL: compare rows of one backend with each other)."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            found = present_tables(conn)
            return {table: [dict(r._mapping) for r in conn.execute(text(
                        f"SELECT {', '.join(c for c in ROWS[table] if c in columns(conn, table))} "
                        f"FROM {table} ORDER BY id"))]
                    for table in TABLES_WITH_ROWS if table in found}
    finally:
        engine.dispose()
