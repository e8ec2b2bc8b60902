"""``oncoagent users`` and ``oncoagent audit export`` as an operator runs them: the installed command in
subprocesses on a data directory, checked against the store they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.passwords import verify_password
from agent.review_records import Role, WebAuditEvent
from agent.store import Store
from dicom_node.records import AssociationRecord, RefusalReason
from tests.conftest import REPO

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def oncoagent(data_dir: Path, *args: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    """``oncoagent --data-dir DATA ARGS`` (the venv's console script), ``stdin`` its standard input; with this
    checkout's default configuration (the installed one may be another checkout's)."""
    script = Path(sys.executable).parent / "oncoagent"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    config = REPO / "config" / "oncoagent.yaml"
    return subprocess.run(
        [*command, "--config", str(config), "--data-dir", str(data_dir), *args], input=stdin, capture_output=True,
        text=True, check=False, timeout=120, cwd=data_dir.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def opened(data_dir: Path) -> Store:
    return Store.open(f"sqlite:///{data_dir / 'oncoagent.db'}", migrate=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_accounts_are_added_listed_given_passwords_and_disabled(data_dir: Path) -> None:
    added = oncoagent(data_dir, "users", "add", "alice", "--role", "pathologist", "--password-stdin",
                      stdin="first secret\n")
    assert added.returncode == 0, added.stderr
    assert "added user alice (pathologist)" in added.stdout
    proxy = oncoagent(data_dir, "users", "add", "bob", "--role", "radiologist", "--no-password")
    assert proxy.returncode == 0, proxy.stderr and "proxy sign-in only" in proxy.stdout

    store = opened(data_dir)  # users add made the store of the new data directory
    try:
        alice = store.user_by_name("alice")
        assert alice is not None and alice.role is Role.PATHOLOGIST and alice.password_hash is not None
        assert verify_password(alice.password_hash, "first secret")
        token, _ = store.create_session(alice.id, "10.0.0.5", 3600.0, T0)
    finally:
        store.close()

    listed = oncoagent(data_dir, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(u["name"], u["role"], u["password"], u["disabled_at"]) for u in json.loads(listed.stdout)] == [
        ("alice", "pathologist", True, None), ("bob", "radiologist", False, None)]
    table = oncoagent(data_dir, "users", "list")
    assert "alice" in table.stdout and "pathologist" in table.stdout
    for out in (listed.stdout, table.stdout):
        assert "$argon2" not in out and alice.password_hash not in out  # never a hash

    passwd = oncoagent(data_dir, "users", "passwd", "alice", "--password-stdin", stdin="second secret\r\n")
    assert passwd.returncode == 0, passwd.stderr
    disabled = oncoagent(data_dir, "users", "disable", "bob")
    assert disabled.returncode == 0 and "disabled user bob" in disabled.stdout

    store = opened(data_dir)
    try:
        alice = store.user_by_name("alice")
        assert alice is not None and alice.password_hash is not None
        assert verify_password(alice.password_hash, "second secret")
        assert not verify_password(alice.password_hash, "first secret")
        assert store.session_user(token, T0 + 1) is None  # the new password signed her out
        bob = store.user_by_name("bob")
        assert bob is not None and bob.disabled
    finally:
        store.close()
    assert json.loads(oncoagent(data_dir, "users", "list", "--json").stdout)[1]["disabled_at"] is not None


def test_mistakes_are_refused_with_a_reason_and_change_nothing(data_dir: Path) -> None:
    assert oncoagent(data_dir, "users", "add", "alice", "--role", "admin", stdin="secret\n").returncode == 0
    duplicate = oncoagent(data_dir, "users", "add", "alice", "--role", "viewer", stdin="other\n")
    assert duplicate.returncode == 1 and "'alice' exists already" in duplicate.stderr
    bad_role = oncoagent(data_dir, "users", "add", "carol", "--role", "surgeon", stdin="secret\n")
    assert bad_role.returncode == 2 and "invalid choice: 'surgeon'" in bad_role.stderr
    bad_name = oncoagent(data_dir, "users", "add", " carol", "--role", "viewer", stdin="secret\n")
    assert bad_name.returncode == 2 and "whitespace" in bad_name.stderr
    empty = oncoagent(data_dir, "users", "add", "dave", "--role", "viewer", "--password-stdin", stdin="\n")
    assert empty.returncode == 2 and "cannot be empty" in empty.stderr
    unknown = oncoagent(data_dir, "users", "disable", "erin")
    assert unknown.returncode == 1 and "no user named 'erin'" in unknown.stderr
    assert oncoagent(data_dir, "users", "passwd", "erin", stdin="secret\n").returncode == 1
    listed = json.loads(oncoagent(data_dir, "users", "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "admin")]


def test_users_list_needs_an_existing_data_directory(data_dir: Path) -> None:
    listed = oncoagent(data_dir, "users", "list")
    assert listed.returncode == 1 and "no OncoAgent database" in listed.stderr


def test_audit_export_merges_both_trails_by_time(data_dir: Path, tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{data_dir / 'oncoagent.db'}")
    try:
        store.audit_add([
            AssociationRecord("MODALITY", "ONCOAGENT", "10.0.0.7", T0 + 10, T0 + 12, None, "", 5),
            AssociationRecord("STRANGER", "ONCOAGENT", "10.0.0.9", T0 + 30, T0 + 30, RefusalReason.CALLING_AE,
                              "not allowed", 0),
            AssociationRecord("OLD", "ONCOAGENT", "10.0.0.7", T0 - 7200, T0 - 7190, None, "", 1),
        ])
        store.web_audit_record([
            WebAuditEvent(T0 + 20, "alice", "10.0.0.5", "view", 3),
            WebAuditEvent(T0 + 40, "mallory\x1b[2J", "10.0.0.66", "login-refused", None, "bad password"),
            WebAuditEvent(T0 - 3600, "alice", "10.0.0.5", "view", 1),
        ])
    finally:
        store.close()
    out = tmp_path / "audit.jsonl"
    exported = oncoagent(data_dir, "audit", "export", "--since", "2027-01-15T08:00", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "4 audit events (2 DICOM, 2 web)" in exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["trail"], e["at"]) for e in lines] == [
        ("dicom", "2027-01-15T08:00:10Z"), ("web", "2027-01-15T08:00:20Z"), ("dicom", "2027-01-15T08:00:30Z"),
        ("web", "2027-01-15T08:00:40Z")]
    assert (lines[0]["calling_ae"], lines[0]["instances_stored"]) == ("MODALITY", 5)
    assert (lines[2]["outcome"], lines[2]["reason"]) == ("refused", "calling-ae")
    assert (lines[1]["user"], lines[1]["action"], lines[1]["job_id"]) == ("alice", "view", 3)
    assert lines[3]["user"] == "mallory\\x1b[2J"
    to_stdout = oncoagent(data_dir, "audit", "export", "--since", "2027-01-15T07:00")
    assert to_stdout.returncode == 0 and len(to_stdout.stdout.splitlines()) == 5  # the web view an hour before
    assert oncoagent(data_dir, "audit", "export", "--since", "yesterday").returncode == 2
