"""DICOM files dropped into watched folders: stored durably under ``storage/`` like a received instance.

From the inbox the file is removed once stored; from a scanner folder it is copied and left in place.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

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
        new = self.store.add_instance(inst)
        if consumed:
            path.unlink()
        log.debug("instance %s stored (%s)", inst.sop_instance_uid, "new" if new else "duplicate")
        return inst.series_uid
