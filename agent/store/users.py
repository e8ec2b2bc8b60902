"""Local accounts of the web worklist (``users``, revision 0006): a unique name, a role, an argon2 hash of the
password (:mod:`agent.passwords`; NULL: the account signs in only through the trusted proxy header) and, once
disabled, when. Accounts are disabled, never deleted: reviews and decisions keep referring to them.

A name is 1 to 128 printable characters without whitespace at either end (:func:`check_name`); this module stores
the hash it is given and never logs it.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from agent.errors import StoreError, UnknownUserError, UserExistsError
from agent.review_records import Role, User
from agent.store import schema
from agent.store.engine import insert_id, locked, read, write

NAME_LIMIT = 128


def check_name(name: str) -> str:
    """``name`` if it may name an account; ValueError saying why not."""
    if not name or len(name) > NAME_LIMIT:
        raise ValueError(f"a user name has 1 to {NAME_LIMIT} characters")
    if not name.isprintable():
        raise ValueError("a user name has printable characters only")
    if name != name.strip():
        raise ValueError("a user name cannot begin or end with whitespace")
    return name


def add_user(engine: Engine, name: str, role: Role | str, password_hash: str | None, now: float) -> User:
    """A new account; :class:`UserExistsError` when the name is taken (by a disabled account too), ValueError
    for a name :func:`check_name` refuses or an unknown role."""
    check_name(name)
    role = Role(role)
    exists = UserExistsError(f"a user named {name!r} exists already")
    try:
        with write(engine) as conn:
            if _find(conn, schema.users.c.name == name) is not None:
                raise exists
            user_id = insert_id(conn, insert(schema.users).values(
                name=name, role=role.value, password_hash=password_hash, created_at=now, disabled_at=None))
    except StoreError as exc:
        if isinstance(exc.__cause__, IntegrityError):  # another writer added the name since the check
            raise exists from exc
        raise
    return User(user_id, name, role, password_hash, now, None)


def user_by_name(engine: Engine, name: str) -> User | None:
    with read(engine) as conn:
        return _find(conn, schema.users.c.name == name)


def user_by_id(engine: Engine, user_id: int) -> User | None:
    with read(engine) as conn:
        return _find(conn, schema.users.c.id == user_id)


def list_users(engine: Engine) -> list[User]:
    """Every account, disabled ones included, by name."""
    with read(engine) as conn:
        return [from_row(row) for row in
                conn.execute(select(schema.users).order_by(schema.users.c.name)).mappings()]


def set_password(engine: Engine, name: str, password_hash: str | None, *, end_sessions: bool = True) -> User:
    """Replace the account's password hash (None: proxy sign-in only); unless ``end_sessions`` is False, its
    web sessions end too (an administrator resetting a password signs the account out everywhere)."""
    with write(engine) as conn:
        user = _existing(conn, name)
        conn.execute(update(schema.users).where(schema.users.c.id == user.id).values(password_hash=password_hash))
        if end_sessions:
            conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.user_id == user.id))
    return User(user.id, user.name, user.role, password_hash, user.created_at, user.disabled_at)


def disable_user(engine: Engine, name: str, now: float) -> User:
    """Disable the account (it can no longer sign in) and end its web sessions; disabling it again keeps the
    first time. :class:`UnknownUserError` when there is no such account."""
    with write(engine) as conn:
        user = _existing(conn, name)
        disabled_at = now if user.disabled_at is None else user.disabled_at
        conn.execute(update(schema.users).where(schema.users.c.id == user.id).values(disabled_at=disabled_at))
        conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.user_id == user.id))
    return User(user.id, user.name, user.role, user.password_hash, user.created_at, disabled_at)


def _existing(conn: Connection, name: str) -> User:
    user = _find(conn, schema.users.c.name == name, lock=True)
    if user is None:
        raise UnknownUserError(f"no user named {name!r}")
    return user


def _find(conn: Connection, where: ColumnElement[bool], *, lock: bool = False) -> User | None:
    query = select(schema.users).where(where)
    row = conn.execute(locked(query) if lock else query).mappings().first()
    return None if row is None else from_row(row)


def from_row(row: RowMapping) -> User:
    """A :class:`User` from a row holding the ``users`` columns (also used by :mod:`agent.store.web_sessions`)."""
    return User(row["id"], row["name"], Role(row["role"]), row["password_hash"], row["created_at"],
                row["disabled_at"])


