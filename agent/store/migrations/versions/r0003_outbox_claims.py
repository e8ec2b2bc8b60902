"""Outbox entries are claimed by the sender that delivers them: several daemons may share one outbox.

``outbox.claimed_by`` names the daemon (``executor.node``) whose sender took a due entry for a round of
deliveries; ``outbox.lease_until`` is when that claim lapses if the entry is still not resolved (the daemon
died mid-round). Both are cleared when an attempt is recorded. Entries of earlier releases have neither.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float, String

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("outbox", Column("claimed_by", String(200)))
    op.add_column("outbox", Column("lease_until", Float))


def downgrade() -> None:
    raise NotImplementedError("schemas are not downgraded: restore the database from its backup")
