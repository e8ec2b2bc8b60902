"""Two ``oncoagent run`` as two hosts (issue 12, "several daemons on one store"): each daemon in a network
namespace of its own, so each has its own loopback and its SCP is reachable only there, as behind a load
balancer; both on one PostgreSQL store (its Unix socket crosses namespaces, as a database host would) and one
shared root for instances and results (as an NFS mount would). A series whose instances arrive partly at one
daemon, partly at the other, and partly at both is recorded once per instance and processed once; a host killed
while it runs a job loses it to the other once its lease expires, and the job's result is recorded once."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.records import JobStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.e2e.test_daemon import BASE_CONFIG, drop, ledger
from tests.support.daemon import DaemonProcess
from tests.support.net import network_isolated
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not network_isolated() or shutil.which("nsenter") is None or shutil.which("unshare") is None,
    reason="needs the suite's private network namespace (tests/run-isolated.sh) and util-linux's unshare/nsenter",
)

OWN_NETWORK = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def send(daemon: DaemonProcess, files: list[Path]) -> None:
    """storescu, run inside the daemon's network namespace (the only place its SCP can be reached)."""
    assert daemon.proc is not None
    proc = subprocess.run(
        ["nsenter", f"--net=/proc/{daemon.proc.pid}/ns/net", "storescu", "-aec", daemon.scp_aet, "127.0.0.1",
         str(daemon.scp_port), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def hosts(tmp_path: Path, postgres: PostgresServer) -> Iterator[tuple[DaemonProcess, DaemonProcess, str]]:
    url = postgres.new_database("twohosts")
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    config: dict[str, Any] = {
        **BASE_CONFIG, "store": {"url": url}, "storage": {"shared_root": str(tmp_path / "shared")},
        "routing": {"rules": [{"name": "series", "pipeline": "test-scripted", "match": {"kind": "dicom-series"}},
                              {"name": "slides", "pipeline": "test-scripted", "match": {"kind": "slide"}}]},
        "ingest": {**BASE_CONFIG["ingest"], "quiet_seconds": 2.0},
    }
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ledger").symlink_to(ledger_dir)
        node = {**config, "executor": {**BASE_CONFIG["executor"], "node": f"host-{name}", "lease_s": 5.0}}
        daemons.append(DaemonProcess(tmp_path / name, node, env={"OA_TEST_LEDGER": str(ledger_dir)},
                                     wrap=OWN_NETWORK))
    try:
        for daemon in daemons:
            daemon.start()
        yield daemons[0], daemons[1], url
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_series_received_by_both_hosts_is_recorded_once_and_processed_once(
        hosts: tuple[DaemonProcess, DaemonProcess, str], tmp_path: Path) -> None:
    a, b, url = hosts
    for daemon in (a, b):  # each SCP listens on its own host's loopback: not on this one's
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", daemon.scp_port), timeout=5).close()
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=12, rows=16, columns=16, seed=120_012))
    files = series.files
    send(a, files[:6])
    send(b, files[4:])  # two instances reach both hosts
    store = Store.open(url, migrate=False)
    try:
        job = wait_for(lambda: next((j for j in store.list_jobs() if j.status.finished), None), 90,
                       what="the series job to finish")
        assert job.status is JobStatus.SUCCEEDED
        assert [j.id for j in store.list_jobs()] == [job.id]  # one job for the series, though both routed it
        assert len(store.instance_paths(job.input_id)) == 12  # each instance once
        assert all(str(p).startswith(str(tmp_path / "shared" / "storage")) for p in store.instance_paths(job.input_id))
        assert [line.split()[0] for line in ledger(a)] == ["start", "done"]  # processed once, by one host
        assert job.claimed_by in ("host-a", "host-b")
        assert job.result_path is not None and job.result_path.parent == tmp_path / "shared" / "results"
    finally:
        store.close()


def test_a_killed_hosts_running_job_is_finished_once_by_the_other_host(
        hosts: tuple[DaemonProcess, DaemonProcess, str]) -> None:
    a, b, url = hosts
    drop(a, "slow-sleep4.tiff")  # into host a's inbox: a claims it, or b does (one store)
    store = Store.open(url, migrate=False)
    try:
        wait_for(lambda: len(ledger(a)) == 1, 60, what="the job to start on one of the hosts")
        [job] = store.list_jobs()
        holder, survivor = (a, "host-b") if job.claimed_by == "host-a" else (b, "host-a")
        holder.signal(signal.SIGKILL)
        holder.wait(10)
        done = wait_for(lambda: (j := store.get_job(job.id)).status is JobStatus.SUCCEEDED and j, 60,
                        what="the other host to claim the job once the lease expired, and finish it")
        assert done.claimed_by == survivor and done.attempts == 1  # the cut-off run did not count
        assert [line.split()[0] for line in ledger(a)] == ["start", "start", "done"]
        assert [e["event"] for e in store.events(job.id)].count("succeeded") == 1
    finally:
        store.close()
