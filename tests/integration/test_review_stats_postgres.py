"""Review statistics on a real PostgreSQL server (tests/support/postgres.py): the backend-neutral tests of
tests/unit/test_review_stats.py collected again (the JSON paths into job summaries differ per dialect)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.store import Store
from tests.support.postgres import PostgresServer
from tests.unit.test_review_stats import (  # noqa: F401  (collected again here, on PostgreSQL)
    reviewer,
    test_a_reopened_case_counts_once_with_its_signed_version,
    test_mr_lesions_accepted_and_rejected_and_since,
    test_only_signed_off_reviews_count_and_a_case_without_decisions_takes_its_jobs_models,
    test_slides_count_confirmed_rejected_reclassed_and_added_per_model_version,
)


@pytest.fixture
def store(postgres: PostgresServer) -> Iterator[Store]:
    s = Store.open(postgres.new_database("store"))
    yield s
    s.close()
