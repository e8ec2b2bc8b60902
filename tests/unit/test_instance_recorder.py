"""The SCP's group-commit recorder: a handler that gives up waiting must not be recorded behind its back."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from dicom_node.errors import RecordError
from dicom_node.recorder import InstanceRecorder
from dicom_node.records import Instance


class SlowRecords:
    """Records instances; the first commit waits until the test releases it."""

    def __init__(self) -> None:
        self.recorded: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def has_instance(self, sop_instance_uid: str, /) -> bool:
        return sop_instance_uid in self.recorded

    def add_instances(self, instances: Sequence[Instance], /) -> Sequence[bool]:
        self.entered.set()
        assert self.release.wait(30)
        self.recorded.extend(i.sop_instance_uid for i in instances)
        return [True] * len(instances)


def instance(folder: Path, uid: str) -> Instance:
    path = folder / f"{uid}.dcm"
    path.write_bytes(b"x")
    return Instance(uid, "1.2.840.10008.5.1.4.1.1.4", "1.2", "1.2.3", path, 1, {}, "scp:TEST")


def test_an_instance_whose_handler_timed_out_before_its_commit_began_is_never_recorded(tmp_path: Path) -> None:
    records = SlowRecords()
    recorder = InstanceRecorder(records)
    first: list[bool] = []
    committing = threading.Thread(target=lambda: first.append(recorder.record(instance(tmp_path, "1.1"))))
    committing.start()
    assert records.entered.wait(30)  # the recorder is busy with 1.1; 1.2 waits in its queue
    with pytest.raises(RecordError, match="not recorded"):
        recorder.record(instance(tmp_path, "1.2"), timeout=0.1)  # the handler answers 0xA700 and deletes its file
    records.release.set()
    committing.join(30)
    recorder.close()  # the recorder has taken 1.2 from its queue by now
    assert first == [True]
    assert records.recorded == ["1.1"]
