"""The web worklist's store: accounts, sessions, case reviews with their decisions, the web audit trail.

Backend-neutral: tests/integration/test_review_store_postgres.py collects them again on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ReviewStateError, StoreError, UnknownUserError, UserExistsError
from agent.records import InputKind
from agent.review_records import DecisionKind, ReviewStatus, Role, User, WebAuditEvent
from agent.store import Store
from agent.store.web_sessions import token_hash

T0 = 1_800_000_000.0
DAY = 86400.0


def queued_job(store: Store, n: int = 0) -> int:
    """A queued job on a slide of its own."""
    inp, _ = store.upsert_file_input(InputKind.SLIDE, Path(f"/slides/{n}.svs"), f"f{n}", {})
    return store.enqueue(inp.id, "p", "1")[0].id


def succeeded_job(store: Store, n: int = 0) -> int:
    """A job that ran and succeeded (a case with a result to review)."""
    job = queued_job(store, n)
    claimed = store.claim()
    assert claimed is not None and claimed.id == job
    store.succeed(job, Path(f"/results/{n}"), {"cells": 3}, [])
    return job


def user(store: Store, name: str = "alice", role: Role = Role.PATHOLOGIST) -> User:
    return store.add_user(name, role, "$argon2id$not-a-real-hash", T0)


# ------------------------------------------------------------------------------------------- accounts


def test_accounts_are_unique_by_name_and_listed_by_name(store: Store) -> None:
    bob = store.add_user("bob", "radiologist", None, T0)
    alice = user(store)
    assert (bob.role, bob.password_hash, bob.disabled) == (Role.RADIOLOGIST, None, False)
    assert store.user_by_name("alice") == alice and store.user_by_id(bob.id) == bob
    assert store.user_by_name("carol") is None and store.user_by_id(9999) is None
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    with pytest.raises(UserExistsError, match="'alice' exists already"):
        store.add_user("alice", Role.ADMIN, None, T0 + 1)
    assert store.user_by_name("alice") == alice  # unchanged


@pytest.mark.parametrize("name", ["", " alice", "alice ", "a\x00b", "a\nb", "\u200b", "x" * 129])
def test_names_must_be_printable_trimmed_and_bounded(store: Store, name: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        store.add_user(name, Role.VIEWER, None, T0)
    assert store.list_users() == []


def test_an_unknown_role_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="surgeon"):
        store.add_user("alice", "surgeon", None, T0)


def test_disabling_an_account_ends_its_sessions_and_refuses_new_ones(store: Store) -> None:
    alice, bob = user(store), user(store, "bob")
    token, _ = store.create_session(alice.id, "10.0.0.5", DAY, T0)
    other, _ = store.create_session(alice.id, "10.0.0.6", DAY, T0)
    bobs, _ = store.create_session(bob.id, "10.0.0.7", DAY, T0)
    disabled = store.disable_user("alice", T0 + 10)
    assert disabled.disabled_at == T0 + 10 and store.user_by_name("alice") == disabled
    assert store.session_user(token, T0 + 20) is None and store.session_user(other, T0 + 20) is None
    late, _ = store.create_session(alice.id, "10.0.0.5", DAY, T0 + 30)  # a session made regardless...
    assert store.session_user(late, T0 + 40) is None  # ...signs no disabled account in
    assert store.session_user(bobs, T0 + 20) is not None  # others keep theirs
    assert store.disable_user("alice", T0 + 50).disabled_at == T0 + 10  # the first time is kept
    with pytest.raises(UnknownUserError, match="'carol'"):
        store.disable_user("carol", T0)


def test_a_new_password_replaces_the_hash_and_signs_the_account_out(store: Store) -> None:
    alice = user(store)
    token, _ = store.create_session(alice.id, "10.0.0.5", DAY, T0)
    kept, _ = store.create_session(alice.id, "10.0.0.5", DAY, T0)
    store.set_password("alice", "$argon2id$new", end_sessions=False)
    assert store.session_user(kept, T0 + 1) is not None
    assert store.set_password("alice", "$argon2id$newer").password_hash == "$argon2id$newer"
    assert store.session_user(token, T0 + 1) is None and store.session_user(kept, T0 + 1) is None
    assert store.user_by_name("alice").password_hash == "$argon2id$newer"  # type: ignore[union-attr]
    with pytest.raises(UnknownUserError):
        store.set_password("carol", None)


# ------------------------------------------------------------------------------------------- sessions


def test_a_session_holds_until_it_expires_and_only_its_hash_is_stored(store: Store) -> None:
    alice = user(store)
    token, csrf = store.create_session(alice.id, "10.0.0.5\x1b[2J", 3600.0, T0)
    assert len(token) >= 43 and len(csrf) >= 43 and token != csrf
    assert store.session_user(token, T0 + 3599) == (alice, csrf)
    assert store.session_user(token, T0 + 3600) is None  # expired
    assert store.session_user(token + "x", T0) is None and store.session_user("", T0) is None
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash, address FROM web_sessions").one()
    assert tuple(stored) == (token_hash(token), "10.0.0.5\\x1b[2J")  # the token itself is nowhere
    assert store.create_session(alice.id, "::1", 3600.0, T0)[0] != token  # random each time


def test_signing_out_and_purging_expired_sessions(store: Store) -> None:
    alice = user(store)
    short, _ = store.create_session(alice.id, "a", 60.0, T0)
    long, _ = store.create_session(alice.id, "a", DAY, T0)
    ended, _ = store.create_session(alice.id, "a", DAY, T0)
    assert store.end_session(ended) is True and store.end_session(ended) is False
    assert store.session_user(ended, T0) is None
    assert store.purge_sessions(T0 + 60) == 1
    assert store.purge_sessions(T0 + 60) == 0
    assert store.session_user(short, T0) is None  # purged (it had expired at T0 + 60)
    assert store.session_user(long, T0 + 60) is not None


# ------------------------------------------------------------------------------------------- reviews


def test_opening_a_case_starts_version_1_held_by_the_first_reviewer(store: Store) -> None:
    alice, bob = user(store), user(store, "bob")
    job = succeeded_job(store)
    assert store.latest_review(job) is None
    review = store.start_review(job, alice.id, T0)
    assert (review.job_id, review.version, review.status) == (job, 1, ReviewStatus.IN_REVIEW)
    assert (review.holder_id, review.holder_name, review.started_at) == (alice.id, "alice", T0)
    assert (review.signed_at, review.signed_by, review.signed_by_name, review.result) == (None, None, None, None)
    assert store.start_review(job, bob.id, T0 + 5) == review  # bob opens the same version; alice still holds it
    assert store.latest_review(job) == review


def test_a_case_without_a_result_cannot_be_reviewed(store: Store) -> None:
    alice = user(store)
    job = queued_job(store)
    with pytest.raises(ReviewStateError, match="no result to review: it is queued"):
        store.start_review(job, alice.id, T0)
    with pytest.raises(StoreError, match="no job 9999"):
        store.start_review(9999, alice.id, T0)
    assert store.latest_review(job) is None


def test_decisions_are_upserted_per_target_undone_and_listed_in_target_order(store: Store) -> None:
    alice, bob = user(store), user(store, "bob")
    review = store.start_review(succeeded_job(store), alice.id, T0)
    store.decide(review.id, "d:10", DecisionKind.CONFIRMED, "CTC", None, "det-1.0", alice.id, T0 + 1)
    store.decide(review.id, "d:2", "rejected", None, None, "det-1.0", alice.id, T0 + 2)
    box = {"x": 100, "y": 200, "w": 16, "h": 16}
    assert store.next_added_target(review.id) == "a:1"
    added = store.decide(review.id, "a:1", DecisionKind.ADDED, "CTM", box, None, alice.id, T0 + 3)
    assert (added.geometry, added.user_name) == (box, "alice")
    assert store.next_added_target(review.id) == "a:2"
    again = store.decide(review.id, "d:10", "rejected", None, None, "det-1.0", bob.id, T0 + 4)  # bob overrules
    assert (again.decision, again.user_name, again.at) == (DecisionKind.REJECTED, "bob", T0 + 4)
    listed = store.decisions(review.id)
    assert [(d.target, d.decision, d.user_name) for d in listed] == [
        ("d:2", DecisionKind.REJECTED, "alice"), ("d:10", DecisionKind.REJECTED, "bob"),
        ("a:1", DecisionKind.ADDED, "alice")]
    assert listed[2].geometry == box and listed[0].model_version == "det-1.0"
    assert store.remove_decision(review.id, "d:2", T0 + 5) is True
    assert store.remove_decision(review.id, "d:2") is False
    assert [d.target for d in store.decisions(review.id)] == ["d:10", "a:1"]
    assert store.latest_review(review.job_id).updated_at == T0 + 5  # type: ignore[union-attr]


@pytest.mark.parametrize(("target", "decision"), [
    ("x:1", "confirmed"), ("d:", "confirmed"), ("d:1 ", "confirmed"), ("a:1", "confirmed"), ("d:1", "added"),
    ("d:1", "maybe"),
])
def test_malformed_decisions_are_refused(store: Store, target: str, decision: str) -> None:
    alice = user(store)
    review = store.start_review(succeeded_job(store), alice.id, T0)
    with pytest.raises(ValueError):
        store.decide(review.id, target, decision, None, None, None, alice.id, T0)
    with pytest.raises(ValueError, match="label"):
        store.decide(review.id, "d:1", "confirmed", "L" * 33, None, None, alice.id, T0)
    assert store.decisions(review.id) == []


def test_a_signed_review_refuses_every_change(store: Store) -> None:
    alice, bob = user(store), user(store, "bob")
    job = succeeded_job(store)
    review = store.start_review(job, alice.id, T0)
    store.decide(review.id, "d:0", "confirmed", "CTC", None, "det-1.0", alice.id, T0 + 1)
    signed = store.sign_off(review.id, alice.id, {"ctc": 1}, "one CTC\x00", T0 + 2)
    assert (signed.status, signed.signed_at, signed.signed_by_name) == (ReviewStatus.SIGNED_OFF, T0 + 2, "alice")
    assert (signed.result, signed.note) == ({"ctc": 1}, "one CTC\\x00")
    with pytest.raises(ReviewStateError, match="signed_off: it cannot be decided on"):
        store.decide(review.id, "d:1", "rejected", None, None, None, bob.id, T0 + 3)
    with pytest.raises(ReviewStateError, match="signed_off"):
        store.remove_decision(review.id, "d:0")
    with pytest.raises(ReviewStateError, match="signed_off: it cannot be signed off"):
        store.sign_off(review.id, bob.id, {"ctc": 0}, None, T0 + 4)
    assert store.start_review(job, bob.id, T0 + 5) == signed  # opening it again changes nothing
    assert store.latest_review(job) == signed
    assert [(d.target, d.decision) for d in store.decisions(review.id)] == [("d:0", DecisionKind.CONFIRMED)]
    store.set_sr_uid(review.id, "2.25.123")
    assert store.latest_review(job).sr_sop_instance_uid == "2.25.123"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="no review 9999"):
        store.sign_off(9999, alice.id, {}, None, T0)


def test_a_note_is_kept_while_in_review_and_refused_once_signed(store: Store) -> None:
    alice = user(store, role=Role.RADIOLOGIST)
    job = succeeded_job(store)
    review = store.start_review(job, alice.id, T0)
    noted = store.set_note(review.id, "lesion 2: cyst\x00", T0 + 1)
    assert (noted.note, noted.updated_at, noted.status) == ("lesion 2: cyst\\x00", T0 + 1, ReviewStatus.IN_REVIEW)
    assert store.set_note(review.id, None, T0 + 2).note is None
    with pytest.raises(ValueError, match="at most 4000 characters"):
        store.set_note(review.id, "x" * 4001, T0 + 3)
    store.sign_off(review.id, alice.id, {}, "signed note", T0 + 4)
    with pytest.raises(ReviewStateError, match="signed_off: it cannot be annotated"):
        store.set_note(review.id, "too late", T0 + 5)
    assert store.latest_review(job).note == "signed note"  # type: ignore[union-attr]


def test_reopening_copies_the_decisions_to_version_2_and_keeps_version_1_signed(store: Store) -> None:
    alice, bob = user(store), user(store, "bob")
    job = succeeded_job(store)
    with pytest.raises(ReviewStateError, match="has no review"):
        store.reopen_review(job, bob.id, T0)
    first = store.start_review(job, alice.id, T0)
    with pytest.raises(ReviewStateError, match="version 1 is in_review"):
        store.reopen_review(job, bob.id, T0)
    store.decide(first.id, "d:0", "confirmed", "CTC", None, "det-1.0", alice.id, T0 + 1)
    store.decide(first.id, "a:1", "added", "CTM", {"x": 1, "y": 2, "w": 3, "h": 4}, None, alice.id, T0 + 2)
    signed = store.sign_off(first.id, alice.id, {"ctc": 1, "ctm": 1}, None, T0 + 3)

    second = store.reopen_review(job, bob.id, T0 + 10)
    assert (second.version, second.status, second.holder_name, second.id) == (2, ReviewStatus.IN_REVIEW, "bob",
                                                                              second.id)
    assert second.id != first.id and store.latest_review(job) == second
    assert store.decisions(second.id) == store.decisions(first.id)  # who, when and what, copied
    store.decide(second.id, "d:0", "rejected", None, None, "det-1.0", bob.id, T0 + 11)
    assert store.next_added_target(second.id) == "a:2"
    assert [d.decision for d in store.decisions(first.id)] == [DecisionKind.CONFIRMED, DecisionKind.ADDED]
    assert store.review_summaries([job])[job] == store.latest_review(job)

    resigned = store.sign_off(second.id, bob.id, {"ctc": 0, "ctm": 1}, "not a CTC", T0 + 12)
    assert (resigned.version, resigned.status, resigned.signed_by_name) == (2, ReviewStatus.SIGNED_OFF, "bob")
    with store.engine.connect() as conn:
        statuses = conn.exec_driver_sql(f"SELECT version, status, signed_at FROM reviews WHERE job_id = {job} "
                                        "ORDER BY version").all()
    assert [tuple(r) for r in statuses] == [(1, "superseded", signed.signed_at), (2, "signed_off", T0 + 12)]
    assert store.reopen_review(job, alice.id, T0 + 20).version == 3


def test_review_summaries_give_each_jobs_newest_version(store: Store) -> None:
    alice = user(store)
    reviewed, reopened, untouched = (succeeded_job(store, n) for n in range(3))
    store.start_review(reviewed, alice.id, T0)
    store.sign_off(store.start_review(reopened, alice.id, T0).id, alice.id, {}, None, T0 + 1)
    newest = store.reopen_review(reopened, alice.id, T0 + 2)
    summaries = store.review_summaries([reviewed, reopened, untouched, 9999])
    assert set(summaries) == {reviewed, reopened}
    assert summaries[reopened] == newest and summaries[reviewed] == store.latest_review(reviewed)
    assert store.review_summaries([]) == {}


def test_signed_reviews_give_each_jobs_signed_version_since_a_time(store: Store) -> None:
    alice = user(store)
    early, late, reopened, unsigned = (succeeded_job(store, n) for n in range(4))
    for job, at in ((early, T0), (late, T0 + DAY), (reopened, T0 + DAY)):
        store.sign_off(store.start_review(job, alice.id, at).id, alice.id, {"n": job}, None, at + 1)
    store.start_review(unsigned, alice.id, T0)
    store.reopen_review(reopened, alice.id, T0 + 2 * DAY)  # version 2 in review: version 1 still counts
    found = store.signed_reviews()
    assert [(review.job_id, review.version, job.id) for review, job in found] == [
        (early, 1, early), (late, 1, late), (reopened, 1, reopened)]
    assert all(r.status is ReviewStatus.SIGNED_OFF and r.signed_by_name == "alice" for r, _ in found)
    assert [r.job_id for r, _ in store.signed_reviews(T0 + DAY)] == [late, reopened]
    assert store.signed_reviews(None, ["another-pipeline"]) == [] and len(store.signed_reviews(None, ["p"])) == 3
    second = store.latest_review(reopened)
    assert second is not None
    store.sign_off(second.id, alice.id, {}, None, T0 + 3 * DAY)  # version 1 becomes superseded
    assert [(r.job_id, r.version) for r, _ in store.signed_reviews(T0 + DAY)] == [(late, 1), (reopened, 2)]


# ------------------------------------------------------------------------------------------- web audit


def test_web_audit_events_come_back_oldest_first_with_hostile_text_escaped(store: Store) -> None:
    hostile = "mallory\x00\x1b[31m\u202e" + "x" * 200
    events = [
        WebAuditEvent(T0 + 2, "alice", "10.0.0.5", "decide", 4, "d:3 confirmed"),
        WebAuditEvent(T0 + 1, hostile, "10.0.0.66\r\n", "login-refused", None, "bad password\x07"),
        WebAuditEvent(T0 + 3, None, "10.0.0.66", "view", 4),
    ]
    assert store.web_audit_record(events) == 3 and store.web_audit_record([]) == 0
    back = store.web_audit_since(T0)
    assert [e.action for e in back] == ["login-refused", "decide", "view"]
    assert back[1] == events[0] and back[2] == events[2]
    refused = back[0]
    assert refused.user_name is not None and refused.user_name.startswith("mallory\\x00\\x1b[31m\\u202e")
    assert refused.user_name.isprintable() and len(refused.user_name) == 128
    assert (refused.address, refused.detail) == ("10.0.0.66\\r\\n", "bad password\\x07")
    assert [e.action for e in store.web_audit_since(T0 + 2)] == ["decide", "view"]
    assert [e.action for e in store.web_audit_since(T0, limit=1)] == ["login-refused"]
