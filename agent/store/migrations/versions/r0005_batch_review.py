"""Batch runs compare: a run records its batch's options (sources, send_results, thresholds) and, for each
input it took, the figures of the input's previous result and, once the new one is in, the verdict and why.
Inputs are indexed by study (a PACS source looks up the series of each study it retrieved), and the inputs
runs took by job (every job's success looks up the run awaiting its result).
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import JSON, Boolean, Column, Float, String

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("batch_runs", Column("options", JSON))
    op.add_column("batch_run_inputs", Column("previous", JSON))
    op.add_column("batch_run_inputs", Column("verdict", String(16)))
    op.add_column("batch_run_inputs", Column("reasons", JSON))
    op.add_column("batch_run_inputs", Column("sent", Boolean))
    op.add_column("batch_run_inputs", Column("compared_at", Float))
    op.create_index("ix_inputs_study", "inputs", ["study_uid"])
    op.create_index("ix_batch_run_inputs_job", "batch_run_inputs", ["job_id"])


def downgrade() -> None:
    raise NotImplementedError("schemas are not downgraded: restore the database from its backup")
