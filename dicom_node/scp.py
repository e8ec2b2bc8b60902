"""The C-ECHO / C-STORE SCP (on :mod:`dicom_node.acceptor`).

The C-STORE handler is thin: it keeps the dataset as the peer encoded it (no pixel decoding), reads only the
header for the UIDs, writes file meta + the received bytes to a new file, fsyncs it and gives it its name
``storage/<Study>/<Series>/<SOP>.dcm`` (:func:`pipelines.durable.write_bytes_durably`), records it in the
:class:`~dicom_node.records.InstanceRecords` the daemon handed in and only then answers 0x0000. Every failure
becomes a DICOM status at this edge (0xA700 out of resources or not recorded, 0xC210 unparsable or truncated,
0xC211 bad UID, 0xA900 SOP Instance UID mismatch) and leaves no file; a resent instance is acknowledged
without a second copy.

Memory stays flat whatever the instance size: a dataset is handed over fragment by fragment as the P-DATA-TF
PDUs arrive (:class:`~dicom_node.association.DatasetSink`). Up to ``STREAM_THRESHOLD`` (4 MiB, well above an
MR/CT slice) it is kept in memory and written in one go once whole (the fast path: one write, one fsync).
Beyond that the file meta header and what arrived so far go to ``storage/.incoming-<random>`` (the storage
root: the final folder is known only from the header, and the same filesystem makes the rename atomic), each
later fragment is appended as it arrives, and once the last one is in the file is fsynced, its header parsed
from the file (pydicom, ``stop_before_pixels``) and its pixel data framing checked chunk by chunk, then it is
renamed into place. A failure, an aborted association or a protocol violation mid-dataset removes the
temporary file; ``.incoming-*`` names a crash leaves behind are removed when the daemon starts.

Associations are refused, with the reason logged, for callers outside the allow-list (AE title, optionally
with source addresses), past the association limit, or when free disk space is under the watermark. What a
peer can hold (connections, threads, time, memory) is bounded by the acceptor (:mod:`dicom_node.acceptor`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import pydicom

from dicom_node.acceptor import AssociationServer
from dicom_node.association import (
    IMPLEMENTATION_UID,
    IMPLEMENTATION_VERSION,
    REJECT_CALLING_AE,
    REJECT_LOCAL_LIMIT,
    AcceptorSettings,
    AssociationInfo,
    DatasetSink,
)
from dicom_node.dimse import Command
from dicom_node.errors import InvalidUIDError, RecordError, UnreadableHeaderError
from dicom_node.header import read_dataset_header, read_file_header
from dicom_node.recorder import InstanceRecorder
from dicom_node.records import AssociationObserver, Instance, InstanceRecords
from dicom_node.settings import ScpConfig
from dicom_node.sop_classes import TRANSFER_SYNTAXES
from dicom_node.storage import (
    HeaderValues,
    file_meta_bytes,
    instance_path,
    routing_attrs,
    truncation,
    truncation_in_file,
    validate_uid,
)
from dicom_node.transport import server_ssl_context
from pipelines.durable import make_folder_durably, write_bytes_durably

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
INVALID_UID = 0xC211  # in the 0xC000 "cannot understand" range: a UID we refuse to make a path of
PROCESSING_FAILURE = 0x0110

STREAM_THRESHOLD = 4 * 2**20  # a dataset up to this size is buffered and written once; a larger one is streamed
INCOMING_PREFIX = ".incoming-"  # temporary files in the storage root (agent/daemon.py removes leftovers)

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class Received:
    """What the handler recorded, for callers that want to know (tests, metrics)."""

    sop_instance_uid: str
    series_uid: str
    new: bool


class StorageSCP:
    def __init__(
        self,
        records: InstanceRecords,
        settings: ScpConfig,
        storage: Path,
        on_received: Callable[[Received], None] | None = None,
        observer: AssociationObserver | None = None,
    ) -> None:
        self.records = records
        self.settings = settings
        self.storage = storage
        self.on_received = on_received
        self.observer = observer
        self._server: AssociationServer | None = None
        self._lock = threading.Lock()
        self._series_by_assoc: dict[int, set[str]] = {}
        self._known_series: set[str] = set()  # series whose routing attributes are already recorded
        self._recorder: InstanceRecorder | None = None
        self.free_space = FreeSpace(storage)

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self) -> int:
        """Start listening in background threads; return the bound port (useful with port 0)."""
        cfg = self.settings
        contexts = (*((sop_class, TRANSFER_SYNTAXES) for sop_class in cfg.sop_classes),
                    (VERIFICATION, TRANSFER_SYNTAXES[:2]))
        acceptor = AcceptorSettings(
            ae_title=cfg.ae_title, contexts=contexts, max_associations=cfg.max_associations,
            max_pending_connections=cfg.max_pending_connections,
            require_called_ae_title=cfg.require_called_ae_title, acse_timeout_s=cfg.acse_timeout_s,
            dimse_timeout_s=cfg.dimse_timeout_s, network_timeout_s=cfg.network_timeout_s,
            ssl_context=server_ssl_context(cfg.tls),
        )
        self._recorder = InstanceRecorder(self.records)
        server = AssociationServer(acceptor, self._refusal, self._handle_store, self._forget_association,
                                   self.observer)
        try:
            port = server.start(cfg.host, cfg.port)
        except OSError:
            self._recorder.close()
            self._recorder = None
            raise
        self._server = server
        log.info("DICOM SCP %s listening on %s:%d%s", cfg.ae_title, cfg.host, port, " (TLS)" if cfg.tls.enabled else "")
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def active_associations(self) -> int:
        return self._server.active_associations if self._server is not None else 0

    def listening(self) -> bool:
        return self._server is not None and self._server.listening

    def pending_connections(self) -> int:
        """Connections that have not sent their whole A-ASSOCIATE-RQ yet."""
        return self._server.pending_connections if self._server is not None else 0

    def refused_connections(self) -> dict[str, int]:
        """Connections refused or dropped before an association, by reason, since the SCP started."""
        return dict(self._server.refused) if self._server is not None else {}

    def receiving_series(self) -> set[str]:
        """Series with an association still open (their instances may not all be here yet)."""
        with self._lock:
            return set().union(*self._series_by_assoc.values()) if self._series_by_assoc else set()

    # ----------------------------------------------------------------------------------- handlers

    def _refusal(self, calling: str, address: str) -> tuple[str, tuple[int, int, int]] | None:
        allowed = self.settings.allowed_callers
        if allowed:
            entry = next((a for a in allowed if a.ae_title == calling), None)
            if entry is None:
                return f"calling AE title {calling!r} is not in scp.allowed_callers", REJECT_CALLING_AE
            if entry.hosts and address not in entry.hosts:
                return f"{calling} may not call from {address}", REJECT_CALLING_AE
        free_mb = self.free_space.mb(fresh=True)  # an association is rare next to its instances: ask the disk
        if free_mb < self.settings.min_free_disk_mb:
            return (
                f"only {free_mb} MB free in {self.storage} (scp.min_free_disk_mb {self.settings.min_free_disk_mb})",
                REJECT_LOCAL_LIMIT,
            )
        return None

    def _forget_association(self, assoc: AssociationInfo) -> None:
        with self._lock:
            self._series_by_assoc.pop(id(assoc), None)

    def _handle_store(self, assoc: AssociationInfo, request: Command, transfer_syntax: str) -> DatasetSink:
        """Where the dataset of one C-STORE goes as it arrives (see the module docstring)."""
        return _IncomingInstance(self, assoc, request, transfer_syntax)

    def _status(self, store: Callable[[], Received]) -> int:
        """Run ``store``; every expected failure becomes its DICOM status, never an exception. Anything else
        propagates: the association is aborted and the temporary file removed."""
        try:
            received = store()
        except InvalidUIDError as exc:
            log.warning("C-STORE refused: %s", exc)
            return INVALID_UID
        except UnreadableHeaderError as exc:
            log.warning("C-STORE refused: %s", exc)
            return CANNOT_UNDERSTAND
        except _Refused as exc:
            log.warning("C-STORE refused: %s", exc.reason)
            return exc.status
        except OSError as exc:
            log.error("C-STORE could not be written: %s", exc)
            return OUT_OF_RESOURCES
        except RecordError as exc:
            log.error("C-STORE could not be recorded: %s", exc)
            return OUT_OF_RESOURCES
        if self.on_received is not None:
            self.on_received(received)
        return SUCCESS

    def _store_buffered(self, assoc: AssociationInfo, sop_class: str, sop_uid: str, meta: bytes, dataset: bytes,
                        transfer_syntax: str) -> Received:
        """A whole small instance in memory (``meta``: the file meta header we made, ``dataset``: the bytes the
        peer sent): parse the dataset's header, check, write it once (temporary file beside the target)."""
        stream = BytesIO(dataset)
        header = read_dataset_header(stream, transfer_syntax, sop_uid, meta, self._known_series)
        cut = truncation(dataset, stream.tell(), header)
        if cut is not None:
            raise _Refused(CANNOT_UNDERSTAND, f"dataset {sop_uid} is truncated: {cut}")

        def write(target: Path, replace: bool) -> int:
            # a missing series folder (the first instance, or purged meanwhile) is made durably on the way; the
            # recorder fsyncs the folder
            return write_bytes_durably(target, [meta, dataset], sync_dir=False, replace=replace)

        return self._keep(assoc, sop_class, sop_uid, header, write)

    def _store_streamed(self, assoc: AssociationInfo, sop_class: str, sop_uid: str, handle: BinaryIO,
                        rename: Callable[[Path], None]) -> Received:
        """A large instance already in a temporary file (open as ``handle``): fsync, parse its header from the
        file, check, ``rename`` it into place."""
        handle.flush()
        os.fsync(handle.fileno())
        size = handle.tell()
        handle.seek(0)
        header = read_file_header(handle, sop_uid)
        cut = truncation_in_file(handle, size, handle.tell(), header)
        if cut is not None:
            raise _Refused(CANNOT_UNDERSTAND, f"dataset {sop_uid} is truncated: {cut}")

        def move(target: Path, replace: bool) -> int:
            make_folder_durably(target.parent)
            if not replace and target.exists():
                raise FileExistsError(target)
            rename(target)  # same filesystem: atomic; the recorder fsyncs the folder
            return size

        return self._keep(assoc, sop_class, sop_uid, header, move)

    def _keep(self, assoc: AssociationInfo, sop_class: str, sop_uid: str, header: HeaderValues,
              put: Callable[[Path, bool], int]) -> Received:
        """Check the header's UIDs, ``put`` the file at its path (returning its size; FileExistsError when the
        path is taken, unless told to replace it), record it. A resent instance already stored and recorded is
        acknowledged without a second copy; a file that no record names (a crash between writing and recording
        it) is replaced."""
        if str(header.get("SOPInstanceUID", "")) != sop_uid:
            raise _Refused(DATASET_DOES_NOT_MATCH, f"dataset SOP Instance UID differs from the request's {sop_uid}")
        study_uid = validate_uid(header.get("StudyInstanceUID"), "StudyInstanceUID")
        series_uid = validate_uid(header.get("SeriesInstanceUID"), "SeriesInstanceUID")
        target = instance_path(self.storage, study_uid, series_uid, sop_uid)
        with self._lock:
            self._series_by_assoc.setdefault(id(assoc), set()).add(series_uid)
        if self.free_space.mb() < self.settings.min_free_disk_mb:
            if target.exists() and self.records.has_instance(sop_uid):
                return self._again(sop_uid, series_uid)
            raise _Refused(OUT_OF_RESOURCES, "free disk space under scp.min_free_disk_mb")
        try:
            size = put(target, False)  # no look first: a new instance (the usual one) costs no query
        except FileExistsError:
            if self.records.has_instance(sop_uid):
                return self._again(sop_uid, series_uid)
            size = put(target, True)
        try:
            attrs: dict[str, Any] = {}  # a scanned header's series is known: its attributes are kept already
            if isinstance(header, pydicom.Dataset) and series_uid not in self._known_series:
                attrs = routing_attrs(header)
            instance = Instance(sop_uid, sop_class, study_uid, series_uid, target, size, attrs,
                                f"scp:{assoc.calling_ae}")
            assert self._recorder is not None
            new = self._recorder.record(instance)
        except BaseException:
            target.unlink(missing_ok=True)  # not recorded: not accepted, leave nothing behind
            raise
        self._known_series.add(series_uid)
        assoc.instances_stored += 1
        return Received(sop_uid, series_uid, new=new)

    def _again(self, sop_uid: str, series_uid: str) -> Received:
        log.info("instance %s received again; already stored", sop_uid)
        return Received(sop_uid, series_uid, new=False)


class _IncomingInstance:
    """The dataset of one C-STORE on its way to disk (a :class:`~dicom_node.association.DatasetSink`).

    Fragments are kept (as the views into the received PDUs they arrive as: no copy) until more than
    ``STREAM_THRESHOLD`` bytes arrived; then they and every later fragment go to a temporary file in the
    storage root. A refusal known from the command alone (a bad UID) or a write error drops the rest of the
    dataset and is answered once it is whole.
    """

    def __init__(self, scp: StorageSCP, assoc: AssociationInfo, request: Command, transfer_syntax: str) -> None:
        self.scp = scp
        self.assoc = assoc
        self.status: int | None = None  # decided before the dataset is whole: the rest is dropped
        self.parts: list[bytes | memoryview] = []
        self.buffered = 0
        self.handle: BinaryIO | None = None
        self.tmp: Path | None = None
        self.transfer_syntax = transfer_syntax
        try:
            self.sop_uid = validate_uid(request.affected_sop_instance, "Affected SOP Instance UID")
            self.sop_class = validate_uid(request.affected_sop_class, "Affected SOP Class UID")
        except InvalidUIDError as exc:
            log.warning("C-STORE refused: %s", exc)
            self.status = INVALID_UID
            return
        meta = part10_bytes(self.sop_class, self.sop_uid, transfer_syntax, assoc.calling_ae, b"")
        self.parts.append(meta)  # the file meta header goes first, whichever way the file is written
        self.buffered = len(meta)

    def write(self, fragment: memoryview) -> None:
        if self.status is not None:
            return
        if self.handle is None:
            self.parts.append(fragment)
            self.buffered += len(fragment)
            if self.buffered > STREAM_THRESHOLD:
                self._spill()
            return
        try:
            self.handle.write(fragment)
        except OSError as exc:
            self._drop(OUT_OF_RESOURCES, f"C-STORE {self.sop_uid} could not be written: {exc}")

    def _spill(self) -> None:
        """Move what arrived so far to a temporary file; the rest of the dataset follows it there."""
        storage = self.scp.storage
        try:
            if self.scp.free_space.mb() < self.scp.settings.min_free_disk_mb:
                self._drop(OUT_OF_RESOURCES, "C-STORE refused: free disk space under scp.min_free_disk_mb")
                return
            fd, name = tempfile.mkstemp(prefix=INCOMING_PREFIX, dir=storage)
            self.tmp = Path(name)
            self.handle = os.fdopen(fd, "w+b")
            for part in self.parts:
                self.handle.write(part)
        except OSError as exc:
            self._drop(OUT_OF_RESOURCES, f"C-STORE {self.sop_uid} could not be written: {exc}")
            return
        finally:
            self.parts = []

    def _drop(self, status: int, reason: str) -> None:
        log.log(logging.ERROR if status == OUT_OF_RESOURCES else logging.WARNING, "%s", reason)
        self.status = status
        self.discard()

    def finish(self) -> int:
        if self.status is not None:
            return self.status
        try:
            if self.handle is None:
                meta, dataset = bytes(self.parts[0]), b"".join(self.parts[1:])
                self.parts = []
                return self.scp._status(lambda: self.scp._store_buffered(self.assoc, self.sop_class, self.sop_uid,
                                                                          meta, dataset, self.transfer_syntax))
            handle = self.handle
            return self.scp._status(lambda: self.scp._store_streamed(self.assoc, self.sop_class, self.sop_uid,
                                                                      handle, self._rename))
        finally:
            self.discard()  # whatever was not moved into place

    def _rename(self, target: Path) -> None:
        assert self.tmp is not None
        os.replace(self.tmp, target)
        self.tmp = None  # no longer ours to remove

    def discard(self) -> None:
        self.parts = []
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)
            self.tmp = None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def part10_bytes(sop_class: str, sop_uid: str, transfer_syntax: str, calling_ae: str, dataset: bytes) -> bytes:
    """The received dataset as a DICOM file: preamble, file meta information, the dataset's bytes unchanged."""
    meta = [(0x0002, "UI", sop_class), (0x0003, "UI", sop_uid), (0x0010, "UI", transfer_syntax),
            (0x0012, "UI", IMPLEMENTATION_UID), (0x0013, "SH", IMPLEMENTATION_VERSION)]
    if calling_ae:
        meta.append((0x0016, "AE", calling_ae))
    return file_meta_bytes(meta) + dataset


class FreeSpace:
    """Free space on the storage's filesystem in MB, asked of the disk at most every ``max_age_s`` seconds for
    each instance (not once per instance: the watermark is a margin, and a write that finds the disk full fails
    anyway, 0xA700 with nothing kept), afresh for each association."""

    def __init__(self, folder: Path, max_age_s: float = 0.5) -> None:
        self.folder = folder
        self.max_age_s = max_age_s
        self._value = 0
        self._until = 0.0

    def mb(self, *, fresh: bool = False) -> int:
        now = time.monotonic()
        if fresh or now >= self._until:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._value = int(shutil.disk_usage(self.folder).free // (1024 * 1024))
            self._until = now + self.max_age_s
        return self._value
