"""Durable writes (pipelines.durable.write_bytes_durably): the whole file under its name or nothing, both ways
(an anonymous O_TMPFILE linked into place, and a named temporary file renamed where there is none)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import durable
from pipelines.durable import write_bytes_durably


@pytest.fixture(params=["anonymous", "named"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "named":
        monkeypatch.setattr(durable._Anonymous, "flag", 0)
    elif not durable._Anonymous.flag:
        pytest.skip("no O_TMPFILE on this platform")
    yield request.param


def test_chunks_become_one_private_file_in_a_folder_made_for_it(tmp_path: Path, way: str) -> None:
    target = tmp_path / "study" / "series" / "1.2.3.dcm"
    size = write_bytes_durably(target, [b"head", memoryview(b"-body-"), b"", bytearray(b"tail")])
    assert size == 14
    assert target.read_bytes() == b"head-body-tail"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # patient data: the daemon's user only
    assert os.listdir(target.parent) == ["1.2.3.dcm"]  # no temporary file left


def test_an_existing_file_is_replaced_whole(tmp_path: Path, way: str) -> None:
    target = tmp_path / "x.dcm"
    target.write_bytes(b"old content, longer than the new one")
    write_bytes_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["x.dcm"]


def test_many_chunks_larger_than_one_writev_are_all_written(tmp_path: Path, way: str) -> None:
    chunks = [os.urandom(97) for _ in range(3000)]  # more than IOV_MAX (1024) buffers
    target = tmp_path / "big.dcm"
    assert write_bytes_durably(target, chunks) == 97 * 3000
    assert target.read_bytes() == b"".join(chunks)


def test_a_failed_write_leaves_nothing_and_the_old_file_untouched(
        tmp_path: Path, way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.dcm"
    target.write_bytes(b"kept")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_bytes_durably(target, b"never stored")
    assert target.read_bytes() == b"kept"
    assert os.listdir(tmp_path) == ["x.dcm"]


def test_a_stale_temporary_file_of_a_crash_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    stale = durable._temporary_name(target)  # what this thread would have left behind
    stale.write_bytes(b"half")
    fd = durable._create(stale)
    os.close(fd)
    assert stale.read_bytes() == b""


def test_without_replace_an_existing_file_is_kept_and_said_so(tmp_path: Path, way: str) -> None:
    target = tmp_path / "x.dcm"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write_bytes_durably(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["x.dcm"]
    fresh = tmp_path / "y.dcm"
    assert write_bytes_durably(fresh, b"new", replace=False) == 3
    assert fresh.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["x.dcm", "y.dcm"]
