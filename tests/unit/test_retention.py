"""Retention eligibility against a real SQLite store: only what was delivered, old enough, is ever offered."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import update

from agent.config import DataPaths, RetentionSettings
from agent.purge import plan
from agent.records import Delivery, InputKind, InputState, Instance, JobStatus
from agent.store import Store, migrations, schema
from tests.support.store_v5 import create_legacy_database

DAY = 86400.0
LATER = time.time() + 3600  # a cutoff that every delivery so far passes


def instance(sop: str, series: str, root: Path = Path("/data/storage")) -> Instance:
    return Instance(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.4", study_uid="1.2.3", series_uid=series,
        path=root / "1.2.3" / series / f"{sop}.dcm", size=10, attrs={"Modality": "MR"}, source="test",
    )


def processed(store: Store, series: str, *, destinations: int = 0, unsent: str | None = None,
              root: Path = Path("/data/storage")) -> tuple[int, int, list[int]]:
    """A series of two instances whose job succeeded with ``destinations`` outbox entries; (input, job, items)."""
    store.add_instances([instance(f"{series}.1", series, root), instance(f"{series}.2", series, root)])
    inp = store.find_input(series)
    assert inp is not None
    job, _ = store.enqueue(inp.id, "p", "1")
    claimed = store.claim()
    assert claimed is not None and claimed.id == job.id
    deliveries = [Delivery(f"pacs{n}", Path(f"/r/{job.id}/sr.dcm"), "1.2", f"2.25.{job.id}{n}")
                  for n in range(destinations)]
    store.succeed(job.id, Path(f"/data/results/job-{job.id:06d}"), {}, [], deliveries, unsent_reason=unsent)
    return inp.id, job.id, [i.id for i in store.outbox_list() if i.job_id == job.id]


def eligible(store: Store, older_than: float = LATER) -> tuple[set[int], set[int]]:
    return ({c.input_id for c in store.purgeable_inputs(older_than)},
            {c.job_id for c in store.purgeable_results(older_than)})


def test_results_are_eligible_only_once_every_outbox_entry_is_sent(store: Store) -> None:
    inp, job, (first, second) = processed(store, "1.1", destinations=2)
    assert eligible(store) == (set(), set())
    store.outbox_sent(first, 0)
    assert eligible(store) == (set(), set())  # one destination still waits
    store.outbox_sent(second, 0)
    assert eligible(store) == ({inp}, {job})
    (candidate,) = store.purgeable_inputs(LATER)
    assert candidate.kind is InputKind.DICOM_SERIES and candidate.series_uid == "1.1"
    assert [p.name for p in candidate.files] == ["1.1.1.dcm", "1.1.2.dcm"]


def test_a_failed_or_cancelled_outbox_entry_keeps_everything(store: Store) -> None:
    _, _, (failed,) = processed(store, "2.1", destinations=1)
    store.outbox_failed(failed, "refused", status=0xA900)
    _, _, (cancelled,) = processed(store, "2.2", destinations=1)
    store.outbox_cancel(cancelled)
    assert eligible(store) == (set(), set())


def test_a_job_without_outbox_entries_is_delivered_when_it_succeeded(store: Store) -> None:
    inp, job, items = processed(store, "3.1")
    assert items == [] and eligible(store) == ({inp}, {job})


def test_results_kept_for_lack_of_patient_context_are_never_eligible(store: Store) -> None:
    processed(store, "4.1", unsent="no patient context: add a sidecar")
    assert eligible(store, older_than=LATER + 1000 * DAY) == (set(), set())


def test_queued_running_failed_and_cancelled_jobs_keep_their_inputs(store: Store) -> None:
    ids = {}
    for series in ("5.1", "5.2", "5.3", "5.4"):
        store.add_instance(instance(f"{series}.1", series))
        inp = store.find_input(series)
        assert inp is not None
        ids[series] = store.enqueue(inp.id, "p", "1")[0].id
    running = store.claim()
    failed = store.claim()
    assert running is not None and failed is not None
    store.fail(failed.id, "bad input")  # no retry: failed for good, a person must look
    store.cancel(ids["5.4"])
    assert store.get_job(failed.id).status is JobStatus.FAILED
    assert eligible(store) == (set(), set())
    # a later success on the same input does not release it while the failed job stands
    inp_id = store.get_job(failed.id).input_id
    job, _ = store.enqueue(inp_id, "p", "2")
    claimed = store.claim()
    while claimed is not None and claimed.id != job.id:
        claimed = store.claim()
    assert claimed is not None
    store.succeed(job.id, Path("/data/results/x"), {}, [])
    assert eligible(store) == (set(), {job.id})


def test_nothing_younger_than_the_cutoff_is_eligible(store: Store) -> None:
    inp, job, _ = processed(store, "6.1")
    assert eligible(store, older_than=time.time() - DAY) == (set(), set())
    with store.engine.begin() as conn:  # delivered two days ago
        conn.execute(update(schema.jobs).where(schema.jobs.c.id == job).values(finished_at=time.time() - 2 * DAY))
        conn.execute(update(schema.inputs).where(schema.inputs.c.id == inp).values(updated_at=time.time() - 2 * DAY))
    assert eligible(store, older_than=time.time() - DAY) == ({inp}, {job})


def test_an_ignored_input_is_eligible_and_a_receiving_one_is_not(store: Store) -> None:
    store.add_instance(instance("7.1.1", "7.1"))
    store.add_instance(instance("7.2.1", "7.2"))
    ignored = store.find_input("7.1")
    assert ignored is not None
    store.mark_ignored(ignored.id, "no rule matched")
    assert eligible(store) == ({ignored.id}, set())


def test_a_purged_series_sent_again_is_new_and_processed_again(store: Store) -> None:
    inp, job, _ = processed(store, "8.1")
    files = store.purge_input(inp, LATER, "series 8.1: test")
    assert files is not None and sorted(p.name for p in files) == ["8.1.1.dcm", "8.1.2.dcm"]
    assert store.purge_results(job, LATER, "results: test") == Path(f"/data/results/job-{job:06d}")
    assert eligible(store) == (set(), set())  # purged once
    assert not store.has_instance("8.1.1") and store.counts()["instances"] == 0
    assert [e["event"] for e in store.events(job)][-1] == "purged"
    assert store.get_input(inp).key == f"purged:{inp}"
    successor = store.find_input("8.1")  # empty, ignored, with the routing attributes; never purged while empty
    assert successor is not None and successor.instance_count == 0 and successor.attrs == {"Modality": "MR"}
    assert successor.state is InputState.IGNORED and eligible(store) == (set(), set())
    # the same instances arrive again (the SCP records attributes only with a series' first instance it sees):
    # new instances of a new input, routed by its attributes, with a job of its own
    resent = [replace(instance(f"8.1.{n}", "8.1"), attrs={}) for n in (1, 2)]
    assert store.add_instances(resent) == [True, True]
    again = store.find_input("8.1")
    assert again is not None and again.id != inp and again.instance_count == 2
    assert again.state is InputState.RECEIVING and again.attrs == {"Modality": "MR"}
    new_job, queued = store.enqueue(again.id, "p", "1")
    assert queued and new_job.id != job


def test_an_input_that_changed_since_it_was_listed_is_not_purged(store: Store) -> None:
    inp, _, _ = processed(store, "9.1")
    assert eligible(store)[0] == {inp}
    store.add_instance(instance("9.1.3", "9.1"))  # receiving again
    assert store.purge_input(inp, LATER, "test") is None
    assert store.has_instance("9.1.1")


def test_high_water_purges_the_oldest_first_until_under_the_mark(store: Store, tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    ages = {"10.1": 30, "10.2": 10, "10.3": 20}  # days since delivery
    for series, age in ages.items():
        inp, job, _ = processed(store, series, root=paths.storage)
        for f in store.instance_paths(inp):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x" * 100)
        with store.engine.begin() as conn:
            at = time.time() - age * DAY
            conn.execute(update(schema.jobs).where(schema.jobs.c.id == job).values(finished_at=at, result_path=None))
            conn.execute(update(schema.inputs).where(schema.inputs.c.id == inp).values(updated_at=at))
    retention = RetentionSettings(high_water_percent=50)
    # 250 bytes over the mark: the two oldest series (200 bytes each) must go
    chosen = plan(store, retention, paths, time.time(), usage=lambda _p: (1000, 750))
    assert [i.label.split()[1] for i in chosen] == ["10.1", "10.3"]
    assert all(i.size == 200 and "high_water_percent" in i.reason for i in chosen)
    assert plan(store, retention, paths, time.time(), usage=lambda _p: (1000, 500)) == []
    # with instances_days, nothing younger goes even over the mark
    young = RetentionSettings(high_water_percent=50, instances_days=25)
    assert [i.label.split()[1] for i in plan(store, young, paths, time.time(), usage=lambda _p: (1000, 999))] == [
        "10.1"
    ]


def test_a_version_3_database_gains_the_purge_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v3.db'}"
    create_legacy_database(url, version=3)  # with a delivered series of its own (input 7)
    store = Store.open(url)
    assert store.migrate() == migrations.head()
    new_input, _, _ = processed(store, "11.1")
    assert sorted(purge.input_id for purge in store.purgeable_inputs(LATER)) == [7, new_input]
    store.close()
