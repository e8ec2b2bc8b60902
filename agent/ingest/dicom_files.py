"""DICOM files dropped into watched folders: stored durably under ``storage/`` like a received instance.

From the inbox the file is removed once stored; from a scanner folder or an archive it is copied and left in
place. A file whose instance is recorded already, with the same dataset in storage, is not copied again: a
nightly batch over an archive reads each file once and writes nothing for what it knows. "The same dataset"
is compared byte for byte after the file meta information (the SCP writes its own file meta: an instance
first received over DICOM and later found in an archive is the same instance).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from agent.config import DataPaths
from agent.errors import InputError
from agent.records import Instance
from agent.store import Store
from dicom_node.storage import instance_path, routing_attrs
from pipelines.durable import copy_durably

log = logging.getLogger(__name__)


def is_dicom(path: Path) -> bool:
    """DICOM Part 10 (preamble + DICM) or, leniently, a file pydicom can parse without the preamble."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    try:
        pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID  # noqa: B018
    except (InvalidDicomError, ValueError, EOFError, OSError, AttributeError, KeyError, TypeError, struct.error):
        return False
    return True


class DicomFileIntake:
    """Stores DICOM files found in folders and records each as an instance of its series."""

    def __init__(self, store: Store, paths: DataPaths) -> None:
        self.store = store
        self.paths = paths

    def take(self, path: Path, consumed: bool) -> str:
        """Store the file; return its series UID (the key of the input it belongs to). InputError when unusable."""
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise InputError(f"unreadable DICOM ({exc})") from exc
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        target = instance_path(
            self.paths.storage, ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
        )
        replacing = target.exists() and self.store.has_instance(str(ds.SOPInstanceUID))
        if replacing and same_dataset(path, target):
            log.debug("instance %s known with the same content: not copied again", ds.SOPInstanceUID)
            if consumed:
                path.unlink()
            return str(ds.SeriesInstanceUID)
        size = copy_durably(path, target)
        inst = Instance(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=sop_class,
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            path=target,
            size=size,
            attrs=routing_attrs(ds),
            source="inbox" if consumed else f"folder:{path.parent}",
        )
        if replacing and self.store.instance_changed(inst, dataset_digest(target)):
            log.info("instance %s stored again with another dataset: series %s has new content",
                     inst.sop_instance_uid, inst.series_uid)
        else:
            new = self.store.add_instance(inst)
            log.debug("instance %s stored (%s)", inst.sop_instance_uid, "new" if new else "duplicate")
        if consumed:
            path.unlink()
        return inst.series_uid


_CHUNK = 1 << 20


def same_dataset(a: Path, b: Path) -> bool:
    """Whether two DICOM files hold the same dataset bytes (whatever their preamble and file meta information)."""
    with a.open("rb") as fa, b.open("rb") as fb:
        start_a, start_b = _dataset_offset(fa), _dataset_offset(fb)
        if start_a is None or start_b is None:
            return False
        if os.fstat(fa.fileno()).st_size - start_a != os.fstat(fb.fileno()).st_size - start_b:
            return False
        fa.seek(start_a)
        fb.seek(start_b)
        while chunk := fa.read(_CHUNK):
            if chunk != fb.read(len(chunk)):
                return False
        return True


def dataset_digest(path: Path) -> str:
    """A digest of the file's dataset bytes (not its preamble or file meta information)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(_dataset_offset(handle) or 0)
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def _dataset_offset(handle: BinaryIO) -> int | None:
    """Where the dataset starts: after the preamble and the file meta group (its group length says where that
    ends); 0 for a file without either; None when the group length is missing or unreadable."""
    head = handle.read(144)
    if head[128:132] != b"DICM":
        return 0 if head[:2] != b"\x02\x00" else None
    # (0002,0000) UL, explicit VR little endian: tag, "UL", length 4, value
    if head[132:138] != b"\x02\x00\x00\x00UL" or len(head) < 144:
        return None
    return 144 + int(struct.unpack_from("<I", head, 140)[0])
