"""The revisions of the job store's schema, oldest first (Alembic loads them by file; see the package above)."""
