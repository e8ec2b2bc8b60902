"""Signed-in browsers of the web worklist (``web_sessions``, revision 0006).

The cookie holds a random token (``secrets.token_urlsafe(32)``: 256 bits); the row is keyed by its SHA-256 (hex),
so a copy of the database signs no one in. Each session has its own random CSRF token, which every
state-changing request must carry. A session holds until ``expires_at``; it ends earlier when the browser signs
out (:func:`end_session`) or the account is disabled or its password reset (:mod:`agent.store.users`), and is
refused as soon as the account is disabled.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Engine, delete, insert, select

from agent.review_records import User
from agent.store import schema
from agent.store.audit import printable
from agent.store.engine import read, write
from agent.store.users import from_row

ADDRESS_LIMIT = 64


def token_hash(token: str) -> str:
    """The key a token's session is stored under: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_session(engine: Engine, user_id: int, address: str, lifetime_s: float, now: float) -> tuple[str, str]:
    """A new session of the account for ``lifetime_s`` seconds from ``now``; return (token, csrf). The token is
    for the cookie and is not stored; ``address`` is the client's, as the web server saw it."""
    if lifetime_s <= 0:
        raise ValueError("a session's lifetime must be positive")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with write(engine) as conn:
        conn.execute(insert(schema.web_sessions).values(
            token_hash=token_hash(token), user_id=user_id, csrf=csrf, address=printable(address, ADDRESS_LIMIT),
            created_at=now, expires_at=now + lifetime_s))
    return token, csrf


def session_user(engine: Engine, token: str, now: float) -> tuple[User, str] | None:
    """The account signed in with ``token`` and the session's CSRF token; None when the token is unknown, its
    session expired (at or after ``expires_at``) or the account is disabled."""
    sessions, users = schema.web_sessions, schema.users
    query = (select(users, sessions.c.csrf)
             .join_from(sessions, users, sessions.c.user_id == users.c.id)
             .where(sessions.c.token_hash == token_hash(token), sessions.c.expires_at > now,
                    users.c.disabled_at.is_(None)))
    with read(engine) as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else (from_row(row), row["csrf"])


def end_session(engine: Engine, token: str) -> bool:
    """Sign the session out; False when there was none."""
    with write(engine) as conn:
        ended = conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.token_hash == token_hash(token)))
    return bool(ended.rowcount)


def purge_sessions(engine: Engine, now: float) -> int:
    """Delete the sessions expired at ``now``; return how many."""
    with write(engine) as conn:
        purged = conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.expires_at <= now))
    return int(purged.rowcount)
