"""A whole-slide instance over 1 GB reaches disk intact while the SCP's memory stays flat: its dataset streams
to a temporary file as the fragments arrive (dicom_node/scp.py), it is never held whole in memory.

The SCP runs in a process of its own (tests/support/scp_process.py) so that its resident memory can be sampled
while dcmtk's storescu sends.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, VLWholeSlideMicroscopyImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[2]
ROWS = COLUMNS = 1024
FRAME_BYTES = ROWS * COLUMNS * 3  # RGB, 8 bits
FRAMES = 342  # 342 frames of 3 MiB: 1.08 GB of pixel data
RSS_GROWTH_LIMIT = 100 * 2**20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)"),
]


def write_large_slide(path: Path, frames: int) -> str:
    """A VL Whole Slide Microscopy instance of ``frames`` native RGB frames, written frame by frame (never
    whole in memory); returns its SOP Instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "Large^Slide", "LARGE1"
    ds.Modality, ds.ImageType = "SM", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = COLUMNS * 19, ROWS * 18
    ds.save_as(path, enforce_file_format=True)
    frame = bytearray(os.urandom(FRAME_BYTES))
    with path.open("ab") as out:  # the Pixel Data element, appended a frame at a time
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frames * FRAME_BYTES))
        for index in range(frames):
            frame[:8] = index.to_bytes(8, "little")  # every frame differs
            out.write(frame)
    return str(ds.SOPInstanceUID)


def dataset_offset(path: Path) -> int:
    """Where the dataset begins in a DICOM file: after preamble, DICM and the file meta group."""
    with path.open("rb") as handle:
        head = handle.read(144)
    assert head[128:132] == b"DICM" and head[132:136] == b"\x02\x00\x00\x00"
    return 144 + int.from_bytes(head[140:144], "little")


def dataset_hash(path: Path) -> str:
    """sha256 of a DICOM file's dataset (everything after its file meta group), read a chunk at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(dataset_offset(path))
        while chunk := handle.read(4 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self.samples += 1
            time.sleep(0.01)


def test_a_1_gb_slide_is_stored_intact_with_flat_memory(tmp_path: Path) -> None:
    slide = tmp_path / "slide.dcm"
    root = tmp_path / "scp"
    root.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.scp_process", str(root)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sop_uid = write_large_slide(slide, FRAMES)
        sent_hash = dataset_hash(slide)
        assert slide.stat().st_size >= 10**9
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        idle = psutil.Process(server.pid).memory_info().rss
        sampler = RssSampler(server.pid)
        sampler.start()
        proc = subprocess.run(
            ["storescu", "-R", "-xe", "-aet", "MODALITY", "-aec", "ONCOAGENT", "127.0.0.1", str(port), str(slide)],
            capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "TCP_NODELAY": "1"},
        )
        sampler.stop.set()
        sampler.join()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stored = list((root / "storage").rglob(f"{sop_uid}.dcm"))
        assert len(stored) == 1, list((root / "storage").rglob("*"))
        assert not list((root / "storage").rglob(".incoming-*"))
        growth = sampler.peak - idle
        print(f"SCP RSS idle {idle / 2**20:.1f} MiB, peak {sampler.peak / 2**20:.1f} MiB "
              f"(+{growth / 2**20:.1f} MiB, {sampler.samples} samples) for {slide.stat().st_size / 1e9:.2f} GB")
        assert sampler.samples > 10
        assert growth < RSS_GROWTH_LIMIT
        assert dataset_hash(stored[0]) == sent_hash  # the dataset's bytes as sent
        header = pydicom.dcmread(stored[0], stop_before_pixels=True)
        assert header.SOPInstanceUID == sop_uid and int(header.NumberOfFrames) == FRAMES
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        slide.unlink(missing_ok=True)
        shutil.rmtree(root / "storage", ignore_errors=True)
