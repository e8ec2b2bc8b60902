"""A job's progress in the store on a real PostgreSQL server: the store test of tests/unit collected again, with
the ``store`` fixture of tests/integration/test_store_postgres.py (a fresh database of the session's server)."""

from __future__ import annotations

from tests.integration.test_store_postgres import database_url, store  # noqa: F401  (PostgreSQL fixtures)
from tests.unit.test_progress_report import (  # noqa: F401  (collected again here, on PostgreSQL)
    test_the_store_records_progress_of_running_jobs_only_keeps_it_at_the_end_and_a_claim_clears_it,
)
