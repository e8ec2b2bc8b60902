"""The instance recorder's group commit: alone, a handler commits in its own thread; handlers arriving while a
commit runs are committed together in one batch after it; a failing store fails every handler of the batch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from dicom_node.errors import RecordError
from dicom_node.recorder import InstanceRecorder
from dicom_node.records import Instance
from tests.support.waiting import wait_for


class Records:
    """In-memory InstanceRecords that notes each commit (batch and thread) and can hold a commit back."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.batches: list[tuple[list[str], str]] = []
        self.hold: threading.Event | None = None
        self.held = threading.Event()
        self.fail = False

    def has_instance(self, sop_instance_uid: str, /) -> bool:
        return sop_instance_uid in self.known

    def add_instances(self, instances: Sequence[Instance], /) -> Sequence[bool]:
        if self.hold is not None:
            self.held.set()
            self.hold.wait(30)
            self.hold = None
        if self.fail:
            raise RuntimeError("database is locked")
        uids = [i.sop_instance_uid for i in instances]
        self.batches.append((uids, threading.current_thread().name))
        new = [uid not in self.known for uid in uids]
        self.known.update(uids)
        return new


def instance(folder: Path, sop: str) -> Instance:
    return Instance(sop, "1.2.840.10008.5.1.4.1.1.4", "1.2.3", "1.2.3.4", folder / f"{sop}.dcm", 10, {}, "scp:T")


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def recorder(records: Records) -> Iterator[InstanceRecorder]:
    recorder = InstanceRecorder(records)
    yield recorder
    recorder.close()


def test_a_lone_handler_commits_its_record_in_its_own_thread(tmp_path: Path, records: Records,
                                                              recorder: InstanceRecorder) -> None:
    assert recorder.record(instance(tmp_path, "1.1")) is True
    assert recorder.record(instance(tmp_path, "1.1")) is False
    me = threading.current_thread().name
    assert records.batches == [(["1.1"], me), (["1.1"], me)]


def test_handlers_arriving_during_a_commit_share_the_next_one(tmp_path: Path, records: Records,
                                                              recorder: InstanceRecorder) -> None:
    records.hold = release = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(recorder.record, instance(tmp_path, "1.1"))
        records.held.wait(30)  # the first commit runs (in its handler's thread) and is held there
        later: list[Future[bool]] = [pool.submit(recorder.record, instance(tmp_path, f"2.{i}")) for i in range(3)]
        wait_for(lambda: recorder._queue.qsize() >= 2, what="the later records to queue behind the commit")
        release.set()
        assert first.result(30) is True
        assert [f.result(30) for f in later] == [True, True, True]
    assert sorted(records.known) == ["1.1", "2.0", "2.1", "2.2"]
    assert records.batches[0] == (["1.1"], records.batches[0][1])
    assert len(records.batches) <= 3  # at least two of the three later records shared a commit
    assert {thread for _, thread in records.batches[1:]} == {"instance-recorder"}


def test_a_failing_store_fails_the_handler_and_records_nothing(tmp_path: Path, records: Records,
                                                               recorder: InstanceRecorder,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicom_node.recorder")
    records.fail = True
    for uid in ("1.1", "1.2", "1.3"):
        with pytest.raises(RecordError, match="database is locked"):
            recorder.record(instance(tmp_path, uid))
    assert records.known == set()
    # one traceback for the outage (a full disk fails every batch), not one per batch
    assert [r.exc_info is not None for r in caplog.records if r.name == "dicom_node.recorder"] == [True]
    records.fail = False
    assert recorder.record(instance(tmp_path, "1.4"))
    assert "recording instances works again" in caplog.text


def test_an_instance_whose_handler_timed_out_before_its_commit_began_is_never_recorded(
    tmp_path: Path, records: Records, recorder: InstanceRecorder
) -> None:
    records.hold = hold = threading.Event()
    first: list[bool] = []
    committing = threading.Thread(target=lambda: first.append(recorder.record(instance(tmp_path, "1.1"))))
    committing.start()
    assert records.held.wait(30)  # 1.1 is being committed; 1.2 waits in the queue behind it
    with pytest.raises(RecordError, match="not recorded"):
        recorder.record(instance(tmp_path, "1.2"), timeout=0.1)  # the handler answers 0xA700 and deletes its file
    hold.set()
    committing.join(30)
    recorder.close()  # the recorder thread has taken 1.2 from its queue by now, and dropped it
    assert first == [True]
    assert [uids for uids, _ in records.batches] == [["1.1"]]
