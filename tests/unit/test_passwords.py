"""Password hashes of the web worklist's accounts (argon2id)."""

from __future__ import annotations

import pytest

from agent.passwords import MAX_LENGTH, hash_password, needs_rehash, verify_password


def test_a_hash_verifies_its_password_only() -> None:
    hashed = hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$") and "correct" not in hashed
    assert verify_password(hashed, "correct horse battery staple") is True
    assert verify_password(hashed, "correct horse battery stapl") is False
    assert verify_password(hashed, "Correct horse battery staple") is False
    assert hash_password("correct horse battery staple") != hashed  # salted
    assert needs_rehash(hashed) is False


@pytest.mark.parametrize("password", ["", "x" * (MAX_LENGTH + 1)])
def test_empty_and_over_long_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValueError, match="password"):
        hash_password(password)
    assert verify_password(hash_password("x"), password) is False


def test_the_longest_password_and_any_unicode_are_fine() -> None:
    longest, accented = "y" * MAX_LENGTH, "pässwörd \u4e2d\u6587 \U0001f512"
    assert verify_password(hash_password(longest), longest) is True
    assert verify_password(hash_password(accented), accented) is True


@pytest.mark.parametrize("bad_hash", ["", "garbage", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$broken",
                                      "$2b$12$abcdefghijklmnopqrstuuMrk3y0zAptDyW0Pm3ng8wBBBdHGx5Vi"])
def test_a_malformed_or_foreign_hash_never_verifies_nor_raises(bad_hash: str) -> None:
    assert verify_password(bad_hash, "anything") is False
    assert needs_rehash(bad_hash) is True


def test_a_password_that_cannot_be_encoded_does_not_verify() -> None:
    assert verify_password(hash_password("x"), "\udcff") is False
    with pytest.raises(ValueError):
        hash_password("\udcff")


def test_a_hash_made_with_weaker_parameters_needs_rehash() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("secret")
    assert verify_password(weak, "secret") is True and needs_rehash(weak) is True


def test_an_accounts_record_does_not_show_its_hash() -> None:
    from agent.review_records import Role, User

    hashed = hash_password("secret")
    shown = repr(User(1, "alice", Role.ADMIN, hashed, 0.0, None))
    assert "alice" in shown and hashed not in shown and "argon2" not in shown
