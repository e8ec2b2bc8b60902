"""``oncoagent batch PATHS`` records a run like a scheduled one; ``oncoagent batch runs`` lists runs with how far
their jobs are; ``oncoagent batch show RUN`` shows one: inputs, jobs by status, failures with reasons, an ETA."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from agent.errors import EXIT_CONFIG, EXIT_FAILED
from agent.records import MANUAL_BATCH, BatchRunStatus
from agent.store import Store
from tests.conftest import SCRIPTED_RULES

SLIDES = ("a.tiff", "b.tiff", "c.tiff")


@pytest.fixture
def oncoagent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Runs ``oncoagent ARGS`` in-process on the test's data directory; checks its exit status, returns stdout."""
    config = tmp_path / "oncoagent.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["tests.support.scripted_pipelines"], "routing": {"rules": SCRIPTED_RULES},
        "executor": {"workers": 2}, "ingest": {"inbox": False},
    }))

    def run(*args: str, status: int = 0) -> str:
        capsys.readouterr()
        assert main(["--config", str(config), "--data-dir", str(tmp_path / "data"), *args]) == status
        return capsys.readouterr().out

    return run


def test_a_hand_run_batch_is_a_run_record_listed_and_shown_with_its_failures(
        oncoagent: Callable[..., str], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in SLIDES:
        (archive / name).write_bytes(b"slide bytes " + name.encode())
    oncoagent("batch", "runs", status=EXIT_FAILED)  # no database in the data directory yet
    out = oncoagent("batch", str(archive))
    assert "3 file(s), 3 input(s), 3 job(s) queued (batch run 1: oncoagent batch show 1)" in out

    listed = oncoagent("batch", "runs")
    header, row = listed.splitlines()
    assert header.split() == ["id", "batch", "slot", "(UTC)", "status", "done/total", "failed", "changed", "discordant"]
    assert row.split()[0:2] == ["1", MANUAL_BATCH] and row.split()[-5:] == ["processing", "0/3", "0", "0", "0"]

    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'oncoagent.db'}", migrate=False)
    try:
        run = store.get_batch_run(1)
        assert run.status is BatchRunStatus.DONE and run.paths == (archive,) and run.owner is not None
        first, second = store.claim(), store.claim()
        assert first is not None and second is not None
        store.succeed(first.id, tmp_path / "r1", {}, [])
        store.fail(second.id, "the slide could not be read: truncated tile 7")
    finally:
        store.close()

    assert oncoagent("batch", "runs").splitlines()[1].split()[-5:-2] == ["processing", "2/3", "1"]
    shown = oncoagent("batch", "show", "1")
    assert f"batch run 1: {MANUAL_BATCH}" in shown
    assert "inputs      3" in shown
    assert "jobs        done 2/3: queued 1, running 0, succeeded 1, failed 1, cancelled 0" in shown
    assert re.search(r"^ETA         \d+ s \(mean job \d+\.\d s, 2 worker\(s\)\)$", shown, re.M), shown
    failure = next(line for line in shown.splitlines() if line.startswith("FAILED"))
    assert f"job {second.id}" in failure and failure.endswith("truncated tile 7")
    assert str(archive.resolve()) in failure

    doc = json.loads(oncoagent("batch", "show", "1", "--json"))
    assert (doc["done"], doc["total"], doc["failed"], doc["status"]) == (2, 3, 1, "processing")
    assert doc["jobs"] == {"queued": 1, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    [failed] = doc["failures"]
    assert (failed["job_id"], failed["input_id"]) == (second.id, second.input_id)
    assert Path(failed["path"]).parent == archive.resolve() and Path(failed["path"]).name in SLIDES
    assert doc["eta_s"] is not None and doc["eta_s"] >= 0
    [listed_doc] = json.loads(oncoagent("batch", "runs", "--json"))
    assert listed_doc["id"] == 1 and listed_doc["done"] == 2

    oncoagent("batch", "show", "x", status=EXIT_CONFIG)
    oncoagent("batch", "show", "99", status=EXIT_FAILED)  # no such run
    oncoagent("batch", str(tmp_path / "nowhere"), status=EXIT_FAILED)
    assert oncoagent("batch", "runs").splitlines()[1].split()[-5:-2] == ["failed", "0/0", "0"]
