"""The daemon's metrics (events counted, the store's numbers read per scrape), its health checks and the HTTP
server that serves both, in process on a free port."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import HttpSettings, Priority
from agent.ops.health import HealthChecks, thread_alive
from agent.ops.http import OpsServer
from agent.ops.metrics import DaemonMetrics, StoreCollector
from agent.records import InputKind, Job, JobStatus
from agent.store import Store
from dicom_node.records import AssociationRecord, RefusalReason

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: DaemonMetrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def refused(reason: RefusalReason) -> AssociationRecord:
    return AssociationRecord("WHO\x00", "ONCOAGENT", "10.1.2.3", 5.0, 5.0, reason, "detail")


def test_events_are_counted_with_reasons_as_the_only_labels() -> None:
    metrics = DaemonMetrics()
    for reason in (RefusalReason.CALLING_AE, RefusalReason.CALLING_AE, RefusalReason.PENDING_LIMIT):
        metrics.association_refused(refused(reason))
    ok = AssociationRecord("MODALITY", "ONCOAGENT", "10.1.2.3", 100.0, 103.5, instances_stored=3)
    metrics.association_accepted(ok)
    metrics.association_ended(ok)
    for _ in range(3):
        metrics.instance_received()
    metrics.job_finished(Job(id=1, input_id=1, pipeline="inspect", pipeline_version="1", input_fingerprint="f",
                             status=JobStatus.SUCCEEDED, priority=Priority.ROUTINE, attempts=1, max_attempts=3,
                             last_error=None, created_at=1.0, updated_at=52.0, started_at=10.0, finished_at=52.0))
    found = scrape(metrics)
    assert found[("oncoagent_dicom_associations_refused_total", (("reason", "calling-ae"),))] == 2
    assert found[("oncoagent_dicom_associations_refused_total", (("reason", "pending-limit"),))] == 1
    assert found[("oncoagent_dicom_associations_refused_total", (("reason", "timeout"),))] == 0
    assert found[("oncoagent_dicom_associations_accepted_total", ())] == 1
    assert found[("oncoagent_dicom_instances_received_total", ())] == 3
    assert found[("oncoagent_dicom_association_duration_seconds_sum", ())] == 3.5
    assert found[("oncoagent_job_run_seconds_sum", (("pipeline", "inspect"),))] == 42.0
    assert found[("oncoagent_job_run_seconds_bucket", (("le", "60.0"), ("pipeline", "inspect")))] == 1
    labels = {value for _, pairs in found for _, value in pairs}
    assert not {"WHO\x00", "10.1.2.3", "MODALITY"} & labels


def test_the_store_numbers_are_read_at_scrape_time(store: Store, tmp_path: Path) -> None:
    metrics = DaemonMetrics()
    active = [2]
    metrics.registry.register(StoreCollector(store, lambda: active[0]))
    inp, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "a.svs", "f1", {})
    store.enqueue(inp.id, "inspect", "1")
    for n in range(3):
        store.outbox_add("pacs", tmp_path / f"{n}.dcm", "1.2", f"2.25.{n}")
    found = scrape(metrics)
    assert found[("oncoagent_jobs", (("status", "queued"),))] == 1
    assert found[("oncoagent_jobs", (("status", "succeeded"),))] == 0
    assert found[("oncoagent_queue_depth", ())] == 1
    assert found[("oncoagent_outbox_entries", (("status", "pending"),))] == 3
    assert found[("oncoagent_dicom_associations_active", ())] == 2
    assert found[("oncoagent_store_up", ())] == 1
    store.claim()
    active[0] = 0
    found = scrape(metrics)
    assert found[("oncoagent_jobs", (("status", "running"),))] == 1 and found[("oncoagent_queue_depth", ())] == 0
    assert found[("oncoagent_dicom_associations_active", ())] == 0


def test_a_store_that_does_not_answer_is_reported_not_zeroed(tmp_path: Path) -> None:
    broken = Store.open(f"sqlite:///{tmp_path / 'unmigrated.db'}", migrate=False)
    metrics = DaemonMetrics()
    metrics.registry.register(StoreCollector(broken, lambda: 0))
    found = scrape(metrics)
    assert found[("oncoagent_store_up", ())] == 0
    assert not any(name.startswith(("oncoagent_jobs", "oncoagent_outbox")) for name, _ in found)
    broken.close()


def test_health_names_each_failing_check() -> None:
    health = HealthChecks(stale_after_s=30)
    assert health.run().as_json()["failing"] == ["main_loop"]  # never ticked
    health.tick()
    done = threading.Thread(target=lambda: None, name="executor")
    done.start()
    done.join()
    health.add("executor", thread_alive(done))
    health.add("store", lambda: (_ for _ in ()).throw(RuntimeError("database is locked")))
    result = health.run()
    body = result.as_json()
    assert not result.ok and body["status"] == "failing" and body["failing"] == ["executor", "store"]
    assert body["checks"]["main_loop"]["ok"] is True
    assert body["checks"]["store"]["detail"] == "RuntimeError: database is locked"
    assert "executor has ended" in body["checks"]["executor"]["detail"]


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_the_server_serves_metrics_and_health_and_drops_a_silent_client() -> None:
    metrics = DaemonMetrics()
    metrics.instance_received()
    health = HealthChecks(stale_after_s=30)
    server = OpsServer(HttpSettings(port=0, request_timeout_s=0.5, max_connections=1), metrics.registry, health)
    port = server.start()
    try:
        status, kind, body = get(port, "/healthz")
        assert status == 503 and kind == "application/json" and json.loads(body)["failing"] == ["main_loop"]
        health.tick()
        status, _, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, kind, body = get(port, "/metrics")
        assert status == 200 and kind.startswith("text/plain") and "oncoagent_dicom_instances_received_total 1.0" \
            in body
        assert get(port, "/other")[0] == 404
        # a client that connects and says nothing holds the only slot until its timeout, then is closed;
        # the next request is served
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            assert silent.recv(1024) == b""
        assert get(port, "/healthz")[0] == 200
    finally:
        server.stop()
