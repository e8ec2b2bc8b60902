"""The shipped systemd unit runs the production example as it stands: an unprivileged user that may bind the
configured SCP port, inside the sandbox, in a unit systemd itself accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config import load_settings
from tests.conftest import REPO

UNIT = REPO / "systemd" / "oncoagent.service"
PRODUCTION = REPO / "config" / "oncoagent.production.yaml"
BIND_CAPABILITY = "CAP_NET_BIND_SERVICE"
FIRST_UNPRIVILEGED_PORT = 1024  # net.ipv4.ip_unprivileged_port_start's default
SANDBOXING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
    "LockPersonality": "yes",
}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections → key → every assignment in order (systemd allows a key more than once; lists accumulate,
    an empty assignment resets them, and a single-valued key takes its last assignment)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # a continuation: joined with a space, as systemd does
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"assignment outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: Unit, section: str, key: str) -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def capability_list(assignments: list[str]) -> set[str] | None:
    """The capabilities a list option grants, or None where it is never set (systemd's default then applies)."""
    granted: set[str] | None = None
    for value in assignments:
        names = value.split()
        if not names:
            granted = set()  # an empty assignment resets the list to nothing
            continue
        assert not names[0].startswith("~"), f"write capability lists as allow-lists, not {value!r}"
        granted = (granted or set()) | set(names)
    return granted


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


@pytest.fixture(scope="module")
def scp_port() -> int:
    return load_settings(PRODUCTION, environ={}).settings.scp.port


def test_the_production_scp_port_can_be_bound(unit: Unit, scp_port: int) -> None:
    service = unit["Service"]
    ambient = capability_list(service.get("AmbientCapabilities", []))
    bounding = capability_list(service.get("CapabilityBoundingSet", []))
    # unset, the bounding set would be every capability: the sandbox names what it keeps
    assert bounding is not None, "CapabilityBoundingSet must be set explicitly"
    needed = {BIND_CAPABILITY} if scp_port < FIRST_UNPRIVILEGED_PORT else set()
    assert ambient == needed, (
        f"scp.port {scp_port} in {PRODUCTION.name} needs AmbientCapabilities={' '.join(sorted(needed))} "
        f"for the unprivileged user (the unit has {ambient})")
    assert bounding == needed, f"CapabilityBoundingSet should hold {needed or 'nothing'}, not {bounding}"


def test_the_daemon_runs_as_an_unprivileged_user(unit: Unit) -> None:
    user = last(unit, "Service", "User")
    assert user and user not in {"root", "0"}
    assert last(unit, "Service", "Group") not in {"root", "0"}
    assert last(unit, "Service", "DynamicUser") in {None, "no"}  # the data folder belongs to a fixed user


def test_the_sandbox_is_in_place(unit: Unit) -> None:
    found = {key: last(unit, "Service", key) for key in SANDBOXING}
    assert found == SANDBOXING
    families = set(" ".join(unit["Service"]["RestrictAddressFamilies"]).split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_the_daemon_writes_where_the_unit_lets_it(unit: Unit) -> None:
    argv = shlex.split(last(unit, "Service", "ExecStart") or "")
    config = Path(argv[argv.index("--config") + 1])
    data_dir = Path(argv[argv.index("--data-dir") + 1])
    assert argv[-1] == "run"
    assert data_dir == load_settings(PRODUCTION, environ={}).settings.data_dir
    writable = [Path(p) for value in unit["Service"]["ReadWritePaths"] for p in value.split()]
    assert data_dir in writable
    readable = [Path(p) for value in unit["Service"].get("ReadOnlyPaths", []) for p in value.split()]
    assert config.parent in readable
    assert last(unit, "Service", "Type") == "notify" and last(unit, "Service", "WatchdogSec")
    assert last(unit, "Service", "Restart") == "on-failure"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian: package systemd)")
    text = UNIT.read_text()
    service = parse_unit(text)["Service"]
    (exec_start,) = service["ExecStart"]
    binary = shlex.split(exec_start)[0]
    # the installed daemon is not here: verify a copy that starts an executable that exists; any other
    # complaint (an unknown key, a value systemd cannot parse, a bad capability name) still shows
    stand_in = shutil.which("true")
    assert stand_in is not None
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={stand_in} ", 1))
    assert copy.read_text() != text
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          timeout=60, check=False)
    # systemd-analyze exits 0 on unknown keys and unparsable values, and only says so: nothing may be said
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # and the shipped unit itself has no complaint but the missing daemon
    proc = subprocess.run([analyze, "verify", "--man=no", str(UNIT)], capture_output=True, text=True,
                          timeout=60, check=False)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if Path(binary).exists():
        assert complaints == []
    else:
        assert complaints == [f"{UNIT.name}: Command {binary} is not executable: No such file or directory"]
