"""Frozen records of the web worklist that the store hands out: accounts, case reviews with the reviewer's
decision on each target, and the web audit trail (see :mod:`agent.store.users`, :mod:`agent.store.web_sessions`,
:mod:`agent.store.reviews`, :mod:`agent.store.web_audit`). Timestamps are seconds since the epoch.

A review is one version of a reviewer's pass over a job's result. It is never edited once signed off: reopening
a signed case starts the next version, whose decisions begin as a copy of the signed one's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Decision", "DecisionKind", "Review", "ReviewStatus", "Role", "User", "WebAuditEvent"]


class Role(StrEnum):
    PATHOLOGIST = "pathologist"
    RADIOLOGIST = "radiologist"
    ADMIN = "admin"
    VIEWER = "viewer"  # reads cases, decides nothing


@dataclass(frozen=True)
class User:
    """A local account of the web worklist. ``password_hash`` is an argon2 hash (:mod:`agent.passwords`); None:
    the account signs in only through the trusted proxy header. A disabled account cannot sign in."""

    id: int
    name: str
    role: Role
    password_hash: str | None = field(repr=False)  # never in a log line that prints the record
    created_at: float
    disabled_at: float | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class ReviewStatus(StrEnum):
    IN_REVIEW = "in_review"  # decisions may be made and undone
    SIGNED_OFF = "signed_off"  # final for this version; a reopen starts the next one
    SUPERSEDED = "superseded"  # a signed version that a later version's sign-off replaced


@dataclass(frozen=True)
class Review:
    """One version of a job's review, with the names of its holder and signer (None when unset)."""

    id: int
    job_id: int
    version: int
    status: ReviewStatus
    holder_id: int | None
    holder_name: str | None
    started_at: float
    updated_at: float
    signed_at: float | None
    signed_by: int | None
    signed_by_name: str | None
    note: str | None
    result: dict[str, Any] | None  # the confirmed figures at sign-off
    sr_sop_instance_uid: str | None  # the verified SR made at sign-off


class DecisionKind(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    ADDED = "added"  # a finding the model missed (target "a:<n>", with its geometry)


@dataclass(frozen=True)
class Decision:
    """The reviewer's word on one target of a review: ``"d:<index>"`` a detection, ``"l:<n>"`` a lesion,
    ``"a:<n>"`` one the reviewer added. ``label`` is the class it has after the decision, ``model_version`` the
    model whose output was judged."""

    target: str
    decision: DecisionKind
    label: str | None
    geometry: Any
    model_version: str | None
    user_id: int
    user_name: str
    at: float


@dataclass(frozen=True)
class WebAuditEvent:
    """One view or decision on the web: when, who (None: not signed in), from where, what, on which job."""

    at: float
    user_name: str | None
    address: str
    action: str
    job_id: int | None = None
    detail: str | None = None
