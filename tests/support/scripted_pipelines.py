"""A scripted pipeline for executor and daemon tests, loaded as a plugin.

Configure ``plugins: [tests.support.scripted_pipelines]`` to register it as ``test-scripted``.

Their behaviour is driven by the input file name and a ledger folder named by ``OA_TEST_LEDGER``:
every attempt appends ``start <key>`` and every completed run ``done <key>`` to ``ledger.txt`` there, so
tests can count how often each input really ran, and a line to ``placement.jsonl`` there: the worker process
(name and pid), its ``CUDA_VISIBLE_DEVICES`` and whether torch was loaded before this plugin (which a worker
loads at start, after pinning its GPU).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pipelines import registry
from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import InputError, TransientError
from pipelines.synthetic.mri_series import synthetic_uid
from tests.support.waiting import wait_for

LEDGER_ENV = "OA_TEST_LEDGER"
TORCH_BEFORE_PLUGIN = "torch" in sys.modules


def ledger_path() -> Path | None:
    folder = os.environ.get(LEDGER_ENV)
    return Path(folder) / "ledger.txt" if folder else None


def _append(line: str, file: str = "ledger.txt") -> None:
    path = ledger_path()
    if path is None:
        return
    path = path.with_name(file)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _started() -> list[str]:
    path = ledger_path()
    if path is None or not path.exists():
        return []
    return [line.removeprefix("start ") for line in path.read_text().splitlines() if line.startswith("start ")]


def attempts_so_far(key: str) -> int:
    return _started().count(key)


def _record_placement(key: str) -> None:
    _append(json.dumps({
        "key": key, "worker": multiprocessing.current_process().name, "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch_before_plugin": TORCH_BEFORE_PLUGIN,
    }), "placement.jsonl")


def _wait_at_barrier(name: str, count: int) -> None:
    """Hold the job until ``count`` jobs of its group (the name up to its first ``-``) have started, so that
    that many workers run one each."""
    group = name.split("-", maxsplit=1)[0] + "-"
    wait_for(lambda: sum(1 for key in _started() if Path(key).name.startswith(group)) >= count, 60,
             what=f"{count} jobs named {group}* to start")


class ScriptedPipeline:
    """Does what the file name says: ``sleep2.5``, ``fail-input``, ``error``, ``transient2`` (fails the
    first 2 attempts), ``sigkill1`` / ``segfault1`` (dies on the first attempt), ``dicomout`` (also writes a
    Secondary Capture result), ``baddicom`` (writes a ``.dcm`` that is not DICOM), ``barrier3`` (waits until
    3 jobs whose names start like its own, up to the first ``-``, have started), else finishes at once. Its
    summary adds what ``findings.json`` in the ledger folder names for the file (see :func:`_findings`)."""

    name: ClassVar[str] = "test-scripted"
    version: ClassVar[str] = "1.0"

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        name = Path(inp.key).name
        before = attempts_so_far(inp.key)
        _append(f"start {inp.key}")
        _record_placement(inp.key)
        if m := re.search(r"barrier(\d)", name):
            _wait_at_barrier(name, int(m.group(1)))
        if m := re.search(r"sleep([0-9.]+?)(?:\.tiff?|-|$)", name):
            time.sleep(float(m.group(1)))
        if "fail-input" in name:
            raise InputError(f"{name} is marked as bad input")
        if "error" in name:
            raise RuntimeError(f"unexpected condition in {name}")
        if (m := re.search(r"transient(\d)", name)) and before < int(m.group(1)):
            raise TransientError(f"peer busy (attempt {before + 1})")
        if (m := re.search(r"sigkill(\d)", name)) and before < int(m.group(1)):
            os.kill(os.getpid(), signal.SIGKILL)
        if (m := re.search(r"segfault(\d)", name)) and before < int(m.group(1)):
            ctypes.string_at(0)
        (out_dir / "output.txt").write_text(f"processed {name}\n")
        files = ["output.txt"]
        if "dicomout" in name:
            secondary_capture(inp.key).save_as(out_dir / "result.dcm", enforce_file_format=True)
            files.append("result.dcm")
        if "baddicom" in name:
            (out_dir / "result.dcm").write_bytes(b"not DICOM at all")
            files.append("result.dcm")
        _append(f"done {inp.key}")
        return PipelineResult(summary={"name": name, "attempt": before + 1, **_findings(name)}, files=tuple(files))


def _findings(name: str) -> dict[str, object]:
    """What ``findings.json`` in the ledger folder says this input's result finds (counts, a priority), if any:
    tests change it between runs to make a reprocessed result differ."""
    path = ledger_path()
    table = path.with_name("findings.json") if path is not None else None
    if table is None or not table.exists():
        return {}
    found: dict[str, object] = json.loads(table.read_text()).get(name, {})
    return found


def secondary_capture(key: str) -> Dataset:
    """A small Secondary Capture whose UIDs derive from the input, so a rerun replaces instead of adding."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = synthetic_uid("sc", key)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = synthetic_uid("sc", key)
    ds.StudyInstanceUID = synthetic_uid("study", key)
    ds.SeriesInstanceUID = synthetic_uid("series", key)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = "TEST^SCRIPTED"
    ds.PatientID = "SCRIPTED"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    return ds


registry.register(ScriptedPipeline.name, ScriptedPipeline)
