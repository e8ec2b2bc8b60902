from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import Priority
from agent.errors import StoreError
from agent.records import InputKind, InputState, Instance, JobStatus
from agent.store import Store


def instance(sop: str, series: str = "1.2.3.4", study: str = "1.2.3") -> Instance:
    return Instance(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        study_uid=study,
        series_uid=series,
        path=Path(f"/data/storage/{study}/{series}/{sop}.dcm"),
        size=100,
        attrs={"Modality": "MR"},
        source="test",
    )


def slide_input(store: Store, name: str = "a.svs", fingerprint: str = "f1") -> int:
    inp, _ = store.upsert_file_input(InputKind.SLIDE, Path("/slides") / name, fingerprint, {"file_name": name})
    return inp.id


def test_duplicate_instance_is_idempotent_and_new_instance_changes_fingerprint(store: Store) -> None:
    assert store.add_instance(instance("1.2.3.4.1")) is True
    first = store.find_input("1.2.3.4")
    assert store.add_instance(instance("1.2.3.4.1")) is False
    assert store.find_input("1.2.3.4").fingerprint == first.fingerprint
    assert store.add_instance(instance("1.2.3.4.2")) is True
    second = store.find_input("1.2.3.4")
    assert second.instance_count == 2
    assert second.fingerprint != first.fingerprint
    assert second.kind is InputKind.DICOM_SERIES
    assert store.counts()["instances"] == 2


def test_a_batch_records_each_new_instance_once_and_grows_each_series_as_one_at_a_time_would(
    store: Store, database_url: Callable[[str], str]
) -> None:
    store.add_instance(instance("1.2.3.4.1"))
    batch = [instance("1.2.3.4.1"), instance("1.2.3.4.2"), instance("1.2.3.5.1", series="1.2.3.5"),
             instance("1.2.3.4.2"), instance("1.2.3.4.3")]
    assert store.add_instances(batch) == [False, True, True, False, True]
    one_by_one = Store.open(database_url("one"))
    try:
        for inst in [instance("1.2.3.4.1"), *batch]:
            one_by_one.add_instance(inst)
        for series, count in (("1.2.3.4", 3), ("1.2.3.5", 1)):
            batched, single = store.find_input(series), one_by_one.find_input(series)
            assert batched is not None and single is not None
            assert (batched.instance_count, batched.fingerprint) == (count, single.fingerprint)
            assert batched.state is InputState.RECEIVING
        assert [p.name for p in store.instance_paths(store.find_input("1.2.3.4").id)] == [  # type: ignore[union-attr]
            "1.2.3.4.1.dcm", "1.2.3.4.2.dcm", "1.2.3.4.3.dcm"]
        assert store.counts()["instances"] == 4
    finally:
        one_by_one.close()


def test_job_is_queued_once_per_content_and_version(store: Store) -> None:
    store.add_instance(instance("1.2.3.4.1"))
    inp = store.find_input("1.2.3.4")
    job, new = store.enqueue(inp.id, "p", "1")
    assert new
    again, new_again = store.enqueue(inp.id, "p", "1")
    assert (again.id, new_again) == (job.id, False)
    claimed = store.claim()
    store.succeed(claimed.id, Path("/r"), {"n": 1}, [{"name": "m", "version": "1", "sha256": "ab"}])
    # the same content and version: never again, unless forced
    assert store.enqueue(inp.id, "p", "1") == (store.get_job(job.id), False)
    # a new version is a new job
    assert store.enqueue(inp.id, "p", "2")[1] is True
    # new content (an instance arrived later) is a new job
    store.add_instance(instance("1.2.3.4.2"))
    assert store.enqueue(inp.id, "p", "1")[1] is True
    # ... and asking again for that new content does not add another
    assert store.enqueue(inp.id, "p", "1")[1] is False
    assert len(store.jobs_for_input(inp.id)) == 3
    assert store.get_job(job.id).status is JobStatus.SUCCEEDED
    assert store.get_job(job.id).models == [{"name": "m", "version": "1", "sha256": "ab"}]


def test_forced_reprocess_requeues_a_succeeded_job(store: Store) -> None:
    inp = slide_input(store)
    job, _ = store.enqueue(inp, "p", "1")
    store.succeed(store.claim().id, Path("/r"), {}, [])
    again, new = store.enqueue(inp, "p", "1", force=True)
    assert new and again.id == job.id and again.status is JobStatus.QUEUED and again.attempts == 0


def test_claim_takes_stat_before_routine_and_oldest_first(store: Store) -> None:
    routine1 = store.enqueue(slide_input(store, "r1.svs"), "p", "1")[0]
    routine2 = store.enqueue(slide_input(store, "r2.svs"), "p", "1")[0]
    stat = store.enqueue(slide_input(store, "s.svs"), "p", "1", priority=Priority.STAT)[0]
    order = [store.claim().id for _ in range(3)]
    assert order == [stat.id, routine1.id, routine2.id]
    assert store.claim() is None
    running = store.get_job(stat.id)
    assert running.status is JobStatus.RUNNING and running.attempts == 1 and running.started_at


def test_failure_retries_with_backoff_until_attempts_run_out(store: Store) -> None:
    job, _ = store.enqueue(slide_input(store), "p", "1", max_attempts=2)
    store.claim()
    later = time.time() + 60
    retried = store.fail(job.id, "peer busy", retry_at=later)
    assert retried.status is JobStatus.QUEUED and retried.not_before == later
    assert store.claim() is None  # not before its time
    assert store.claim(now=later + 1).id == job.id
    final = store.fail(job.id, "peer still busy", retry_at=later + 100)
    assert final.status is JobStatus.FAILED  # 2 of 2 attempts used
    assert final.last_error == "peer still busy" and final.finished_at
    assert [e["event"] for e in store.events(job.id)] == ["queued", "started", "retry", "started", "failed"]


def test_permanent_failure_does_not_retry(store: Store) -> None:
    job, _ = store.enqueue(slide_input(store), "p", "1", max_attempts=5)
    store.claim()
    assert store.fail(job.id, "corrupt file").status is JobStatus.FAILED


def test_running_jobs_are_requeued_without_using_an_attempt(store: Store) -> None:
    job, _ = store.enqueue(slide_input(store), "p", "1")
    store.claim()
    assert store.requeue_running("restart") == [job.id]
    again = store.get_job(job.id)
    assert again.status is JobStatus.QUEUED and again.attempts == 0
    assert store.requeue_running("restart") == []


def test_retry_and_cancel_only_from_the_right_states(store: Store) -> None:
    job, _ = store.enqueue(slide_input(store), "p", "1")
    with pytest.raises(StoreError, match="only failed or cancelled"):
        store.retry(job.id)
    assert store.cancel(job.id).status is JobStatus.CANCELLED
    assert store.claim() is None
    assert store.retry(job.id).status is JobStatus.QUEUED
    store.claim()
    with pytest.raises(StoreError, match="only queued jobs"):
        store.cancel(job.id)
    with pytest.raises(StoreError, match="no job 999"):
        store.get_job(999)


def test_succeed_requires_a_running_job(store: Store) -> None:
    job, _ = store.enqueue(slide_input(store), "p", "1")
    with pytest.raises(StoreError, match="expected running"):
        store.succeed(job.id, Path("/r"), {}, [])


def test_file_input_is_new_only_when_content_changes(store: Store) -> None:
    inp, new = store.upsert_file_input(InputKind.SLIDE, Path("/s/a.svs"), "f1", {})
    assert new and inp.state is InputState.RECEIVING
    store.enqueue(inp.id, "p", "1")
    same, new_same = store.upsert_file_input(InputKind.SLIDE, Path("/s/a.svs"), "f1", {})
    assert not new_same and same.state is InputState.ROUTED
    changed, new_changed = store.upsert_file_input(InputKind.SLIDE, Path("/s/a.svs"), "f2", {})
    assert new_changed and changed.id == inp.id and changed.state is InputState.RECEIVING


def test_ignored_input_keeps_its_reason_and_counts(store: Store) -> None:
    inp = slide_input(store)
    store.mark_ignored(inp, "no rule matched (slides: suffix '.txt' not in ['.svs'])")
    got = store.get_input(inp)
    assert got.state is InputState.IGNORED and "suffix '.txt'" in got.reason
    counts = store.counts()
    assert counts["slides"] == 1 and counts["inputs_by_state"]["ignored"] == 1
    assert counts["jobs"] == {s.value: 0 for s in JobStatus}


def test_receiving_inputs_respects_quiet_time(store: Store) -> None:
    store.add_instance(instance("1.2.3.4.1"))
    assert store.receiving_inputs(quiet_before=time.time() - 60) == []
    assert [i.key for i in store.receiving_inputs(quiet_before=time.time() + 1)] == ["1.2.3.4"]


def test_two_store_handles_share_one_database(database_url: Callable[[str], str]) -> None:
    url = database_url("shared")
    a, b = Store.open(url), Store.open(url)
    try:
        job, _ = a.enqueue(slide_input(a), "p", "1")
        assert b.claim().id == job.id
        assert a.claim() is None
    finally:
        a.close()
        b.close()


def test_a_result_kept_locally_is_counted_listed_and_can_be_retried(store: Store, tmp_path: Path) -> None:
    unsent_inp, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "a.svs", "fa", {})
    sent_inp, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "b.svs", "fb", {})
    for inp in (unsent_inp, sent_inp):
        store.enqueue(inp.id, "p", "1")
    first, second = store.claim(), store.claim()
    assert first is not None and second is not None
    store.succeed(first.id, tmp_path / "r1", {}, [], unsent_reason="no patient context: add a sidecar")
    store.succeed(second.id, tmp_path / "r2", {}, [])
    assert store.counts()["results_unsent"] == 1
    assert [(j.id, j.unsent_reason) for j in store.list_unsent()] == [(first.id, "no patient context: add a sidecar")]
    with pytest.raises(StoreError, match="only failed or cancelled jobs"):
        store.retry(second.id)  # delivered results are not re-run by accident
    again = store.retry(first.id)
    assert again.status is JobStatus.QUEUED and again.attempts == 0
    rerun = store.claim()
    assert rerun is not None and rerun.id == first.id
    store.succeed(rerun.id, tmp_path / "r1", {}, [])
    assert store.counts()["results_unsent"] == 0 and store.list_unsent() == []
