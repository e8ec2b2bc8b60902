"""Password hashes of the web worklist's local accounts: argon2id (argon2-cffi, its default parameters).

Only hashes are stored (``users.password_hash``); a password is never logged, stored or printed. Passwords must
be 1 to :data:`MAX_LENGTH` characters: an empty one is refused, and a longer one is refused before hashing, so a
sign-in form cannot be made to hash megabytes.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

MAX_LENGTH = 1024

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``; ValueError when it is empty or longer than :data:`MAX_LENGTH`."""
    if not password:
        raise ValueError("a password cannot be empty")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password may have at most {MAX_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``. False, never an exception, for a mismatch, a malformed
    or foreign hash, and a password that :func:`hash_password` would refuse (or that holds a lone surrogate)."""
    if not password or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, ValueError):  # a mismatch; a malformed hash, or a password not UTF-8 encodable
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than today's (rehash it at the next good sign-in); True
    for a malformed hash."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except ValueError:  # InvalidHashError
        return True
