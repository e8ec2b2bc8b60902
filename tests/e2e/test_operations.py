"""Operations end to end: a daemon receives a series from an allowed modality (dcmtk's storescu) and refuses a
stranger; ``/metrics`` counts both, with the store's jobs and outbox backlog, ``/healthz`` is 200 with its
checks, and ``oncoagent audit list`` holds both associations with their outcome and instance count."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.e2e.test_dicom_daemon import storescu
from tests.support.daemon import DaemonProcess
from tests.support.net import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")

SLICES = 6


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_health_and_audit_after_a_series_and_a_refusal(tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "scp": {"allowed_callers": [{"ae_title": "MODALITY"}]},
        "routing": {"rules": [{"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}}]},
        "executor": {"workers": 1, "poll_interval_s": 0.1, "shutdown_grace_s": 1.0},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 0.5},
        # a PACS that is down: what is queued for it stays the outbox backlog
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}],
        "outbox": {"backoff_base_s": 30.0, "backoff_max_s": 60.0, "scan_interval_s": 0.2, "timeout_s": 2},
    }
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=SLICES, rows=16, columns=16, seed=71))
    daemon = DaemonProcess(tmp_path, config)
    daemon.start()
    try:
        sent = storescu(daemon, series.files)
        assert sent.returncode == 0, sent.stderr
        refused = subprocess.run(["storescu", "-aet", "STRANGER", "-aec", daemon.scp_aet, "127.0.0.1",
                                  str(daemon.scp_port), str(series.files[0])],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode != 0
        queued = daemon.cli("outbox", "add", "pacs", *map(str, series.files[:2]))
        assert queued.returncode == 0, queued.stderr
        wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 1, 60, what="the series job")

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            status, text = daemon.http_get("/metrics")
            assert status == 200
            found = samples(text)
            done = found.get(("oncoagent_job_run_seconds_count", (("pipeline", "inspect"),))) and found.get(
                ("oncoagent_dicom_association_duration_seconds_count", ()))  # the association's thread is over
            return found if done else {}

        metrics = wait_for(scraped, 30, what="the job's and the association's durations in the metrics")
        assert metrics[("oncoagent_dicom_instances_received_total", ())] == SLICES
        assert metrics[("oncoagent_dicom_associations_accepted_total", ())] == 1
        assert metrics[("oncoagent_dicom_associations_refused_total", (("reason", "calling-ae"),))] == 1
        assert metrics[("oncoagent_dicom_associations_refused_total", (("reason", "association-limit"),))] == 0
        assert metrics[("oncoagent_dicom_associations_active", ())] == 0
        assert metrics[("oncoagent_jobs", (("status", "succeeded"),))] == 1
        assert metrics[("oncoagent_jobs", (("status", "failed"),))] == 0
        assert metrics[("oncoagent_queue_depth", ())] == 0
        assert metrics[("oncoagent_outbox_entries", (("status", "pending"),))] == 2
        assert metrics[("oncoagent_outbox_entries", (("status", "sent"),))] == 0
        assert metrics[("oncoagent_dicom_association_duration_seconds_count", ())] == 1
        assert metrics[("oncoagent_store_up", ())] == 1
        assert metrics[("oncoagent_audit_records_dropped_total", ())] == 0
        assert not any("STRANGER" in str(labels) or "MODALITY" in str(labels) for _, labels in metrics)

        status, body = daemon.http_get("/healthz")
        assert status == 200, body
        health = json.loads(body)
        assert health["status"] == "ok" and health["failing"] == []
        assert set(health["checks"]) == {"main_loop", "store", "executor", "scp", "web"}
        assert all(check["ok"] for check in health["checks"].values())

        def audited() -> list[dict[str, Any]]:
            proc = daemon.cli("audit", "list", "--json")
            assert proc.returncode == 0, proc.stderr
            records: list[dict[str, Any]] = json.loads(proc.stdout)
            return records if len(records) >= 2 else []

        records = wait_for(audited, 30, what="both associations in the audit trail")
        by_caller = {r["calling_ae"]: r for r in records}
        assert len(records) == 2 and set(by_caller) == {"MODALITY", "STRANGER"}
        accepted, stranger = by_caller["MODALITY"], by_caller["STRANGER"]
        assert (accepted["outcome"], accepted["reason"], accepted["instances_stored"]) == ("accepted", None, SLICES)
        assert (stranger["outcome"], stranger["reason"], stranger["instances_stored"]) == ("refused", "calling-ae", 0)
        assert "allowed_callers" in stranger["detail"]
        assert {r["called_ae"] for r in records} == {daemon.scp_aet} and {r["address"] for r in records} == {
            "127.0.0.1"}
        table = daemon.cli("audit", "list", "--since", "1h")
        assert table.returncode == 0 and "refused: calling-ae" in table.stdout and "MODALITY" in table.stdout
    finally:
        daemon.discard()


def test_an_http_port_in_use_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon = DaemonProcess(tmp_path, {"http": {"port": taken.getsockname()[1]}})
        daemon.start(wait_ready=False)
        try:
            assert daemon.wait(60) == 1
        finally:
            daemon.stop()
    assert "cannot listen for HTTP (metrics, health) on 127.0.0.1" in daemon.log()
    assert "oncoagent running" not in daemon.log()
