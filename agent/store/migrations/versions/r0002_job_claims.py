"""Job claims have an owner and a lease: several daemons may share one store.

``jobs.claimed_by`` names the daemon (``executor.node``) that claimed a job last; ``jobs.lease_until`` is when
its claim of a running job lapses unless renewed. Both are empty for jobs claimed before this revision: a
daemon that starts puts such running jobs back in the queue, as before.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float, String

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("jobs", Column("claimed_by", String(200)))
    op.add_column("jobs", Column("lease_until", Float))


def downgrade() -> None:
    raise NotImplementedError("schemas are not downgraded: restore the database from its backup")
