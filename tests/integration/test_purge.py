"""``oncoagent purge`` on a real data directory: exactly the delivered, old enough files go; --dry-run deletes
nothing; a slide read in place from a scanner folder is never deleted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from agent.cli import main
from agent.config import DataPaths, Settings
from agent.purge import PeriodicPurge
from agent.records import Delivery, InputKind, Instance
from agent.store import Store, schema
from tests.support.waiting import wait_for

DAY = 86400.0


class DataDir:
    def __init__(self, root: Path) -> None:
        self.paths = DataPaths(root)
        self.paths.create()
        self.store = Store.open(f"sqlite:///{root / 'oncoagent.db'}")

    def write(self, path: Path, size: int = 100) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        return path

    def series(self, uid: str) -> int:
        insts = []
        for n in (1, 2):
            path = self.write(self.paths.storage / "1.2.3" / uid / f"{uid}.{n}.dcm")
            insts.append(Instance(f"{uid}.{n}", "1.2.840.10008.5.1.4.1.1.4", "1.2.3", uid, path, 100,
                                  {"Modality": "MR"}, "test"))
        self.store.add_instances(insts)
        inp = self.store.find_input(uid)
        assert inp is not None
        return inp.id

    def slide(self, path: Path, *parts: Path) -> int:
        for p in (path, *parts):
            self.write(p)
        inp, _ = self.store.upsert_file_input(InputKind.SLIDE, path, f"f-{path.name}", {"file_name": path.name})
        return inp.id

    def job(self, input_id: int, *, age_days: float, outbox: str | None = None, unsent: str | None = None,
            fail: bool = False) -> Path | None:
        job, _ = self.store.enqueue(input_id, "p", "1")
        claimed = self.store.claim()
        assert claimed is not None and claimed.id == job.id
        if fail:
            self.store.fail(job.id, "unreadable input")
            return None
        result = self.paths.results / f"job-{job.id:06d}"
        self.write(result / "result.json", 50)
        self.write(result / "sr.dcm", 50)
        deliveries = [Delivery("pacs", result / "sr.dcm", "1.2", f"2.25.{job.id}")] if outbox else []
        self.store.succeed(job.id, result, {}, [], deliveries, unsent_reason=unsent)
        at = time.time() - age_days * DAY
        with self.store.engine.begin() as conn:
            conn.execute(update(schema.jobs).where(schema.jobs.c.id == job.id).values(finished_at=at))
            conn.execute(update(schema.inputs).where(schema.inputs.c.id == input_id).values(updated_at=at))
        if outbox == "sent":
            (item,) = [i for i in self.store.outbox_list() if i.job_id == job.id]
            self.store.outbox_sent(item.id, 0)
            with self.store.engine.begin() as conn:
                conn.execute(update(schema.outbox).where(schema.outbox.c.id == item.id).values(sent_at=at))
        return result

    def files(self) -> set[str]:
        return {str(p.relative_to(self.paths.root)) for p in self.paths.root.rglob("*")
                if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm", ".lock")
                and not p.name.startswith("oncoagent.db")}


@pytest.fixture
def data(tmp_path: Path) -> Iterator[DataDir]:
    d = DataDir(tmp_path / "data")
    yield d
    d.store.close()


def run_purge(tmp_path: Path, data: DataDir, *extra: str, capsys: pytest.CaptureFixture[str]) -> str:
    config = tmp_path / "oncoagent.yaml"
    config.write_text("retention:\n  instances_days: 2\n  results_days: 2\n")
    assert main(["--config", str(config), "--data-dir", str(data.paths.root), "purge", *extra]) == 0
    return capsys.readouterr().out


def test_purge_removes_exactly_the_delivered_old_files(
    tmp_path: Path, data: DataDir, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = data.paths.storage
    old_sent = data.job(data.series("1.1"), age_days=10, outbox="sent")
    old_pending = data.job(data.series("1.2"), age_days=10, outbox="pending")
    data.job(data.series("1.3"), age_days=10, fail=True)
    young = data.job(data.series("1.4"), age_days=1, outbox="sent")
    single = data.job(data.slide(storage / "slides" / "a.svs", storage / "slides" / "a.svs.json"), age_days=10)
    multi = data.job(data.slide(storage / "slides" / "m" / "m.mrxs", storage / "slides" / "m" / "m" / "Data0.dat"),
                     age_days=10)
    scanner = tmp_path / "scanner" / "s.svs"
    in_place = data.job(data.slide(scanner), age_days=10)
    unsent = data.job(data.slide(storage / "slides" / "u.svs"), age_days=10, unsent="no patient context")
    assert old_sent and old_pending and young and single and multi and in_place and unsent
    before = data.files()

    out = run_purge(tmp_path, data, "--dry-run", capsys=capsys)
    assert data.files() == before  # a dry run deletes nothing
    assert "would free 1000 bytes" in out and "3 input(s), 4 result folder(s)" in out
    assert data.store.counts()["instances"] == 8

    out = run_purge(tmp_path, data, capsys=capsys)
    assert "freed 1000 bytes" in out
    gone = {
        "storage/1.2.3/1.1/1.1.1.dcm", "storage/1.2.3/1.1/1.1.2.dcm",
        "storage/slides/a.svs", "storage/slides/a.svs.json",
        "storage/slides/m/m.mrxs", "storage/slides/m/m/Data0.dat",
        *(str(r.relative_to(data.paths.root) / f) for r in (old_sent, single, multi, in_place)
          for f in ("result.json", "sr.dcm")),
    }
    assert before - data.files() == gone
    assert data.files() == before - gone
    assert scanner.is_file()  # a scanner folder's slide is not ours: only its results went
    assert not (storage / "1.2.3" / "1.1").exists() and not (storage / "slides" / "m").exists()
    assert (storage / "1.2.3" / "1.2").is_dir() and data.paths.results.is_dir()
    assert data.store.counts()["instances"] == 6
    assert "freed 0 bytes" in run_purge(tmp_path, data, capsys=capsys)  # purged once


def test_purge_without_retention_settings_deletes_nothing(
    tmp_path: Path, data: DataDir, capsys: pytest.CaptureFixture[str]
) -> None:
    data.job(data.series("2.1"), age_days=1000)
    before = data.files()
    config = tmp_path / "none.yaml"
    config.write_text("log:\n  level: INFO\n")
    assert main(["--config", str(config), "--data-dir", str(data.paths.root), "purge"]) == 0
    assert "nothing is purged" in capsys.readouterr().out
    assert data.files() == before


def test_the_daemons_purge_thread_purges_and_stops_and_skips_series_being_received(data: DataDir) -> None:
    settings = Settings.model_validate({"data_dir": str(data.paths.root), "retention": {"instances_days": 2}})
    received, receiving = data.series("3.1"), data.series("3.2")
    data.job(received, age_days=10)
    data.job(receiving, age_days=10)
    stop = threading.Event()
    purges = PeriodicPurge(data.store, settings, stop, busy=lambda: {"3.2"})
    purges.start()
    wait_for(lambda: data.store.get_input(received).key == f"purged:{received}", timeout=10, what="the purge")
    stop.set()
    purges.join(5)
    assert not purges.thread.is_alive()
    assert not (data.paths.storage / "1.2.3" / "3.1").exists()
    assert data.store.find_input("3.2") is not None and (data.paths.storage / "1.2.3" / "3.2").is_dir()
