"""The C-ECHO / C-STORE SCP (pynetdicom).

The C-STORE handler is thin: it takes the dataset as the peer encoded it (no pixel decoding), reads only the
header for the UIDs, writes file meta + raw bytes to a temporary file, fsyncs and renames it into
``storage/<Study>/<Series>/<SOP>.dcm``, records it in the store and only then answers 0x0000. Every failure
becomes a DICOM status at this edge (0xA700 out of resources, 0xC2xx cannot understand) and leaves no file.

Associations are refused, with the reason logged, for callers outside the allow-list (AE title, optionally
with source addresses), past the association limit, or when free disk space is under the watermark.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from agent.config import ScpSettings, TlsSettings
from agent.durable import write_bytes_durably
from agent.errors import InputError, OncoAgentError
from agent.records import Instance
from agent.store import Store
from dicom_node.recorder import InstanceRecorder
from dicom_node.sop_classes import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from dicom_node.storage import instance_path, routing_attrs, truncation, validate_uid

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
INVALID_UID = 0xC211  # in the 0xC000 "cannot understand" range: a UID we refuse to make a path of
PROCESSING_FAILURE = 0x0110

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, presentation related, local limit exceeded


@dataclass(frozen=True)
class Received:
    """What the handler recorded, for callers that want to know (tests, metrics)."""

    sop_instance_uid: str
    series_uid: str
    new: bool


class StorageSCP:
    def __init__(
        self,
        store: Store,
        settings: ScpSettings,
        storage: Path,
        on_received: Callable[[Received], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.storage = storage
        self.on_received = on_received
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        self._series_by_assoc: dict[int, set[str]] = {}
        self._known_series: set[str] = set()  # series whose routing attributes are already recorded
        self._recorder: InstanceRecorder | None = None
        self.ae = self._make_ae()

    # ----------------------------------------------------------------------------------- lifecycle

    def _make_ae(self) -> AE:
        cfg = self.settings
        ae = AE(ae_title=cfg.ae_title)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context("1.2.840.10008.1.1", list(TRANSFER_SYNTAXES[:2]))  # Verification
        ae.maximum_associations = cfg.max_associations
        ae.require_called_aet = cfg.require_called_ae_title
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        ae.maximum_pdu_size = 0  # no limit on what we receive
        return ae

    def start(self) -> int:
        """Start listening in background threads; return the bound port (useful with port 0)."""
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_RELEASED, self._forget_association),
            (evt.EVT_ABORTED, self._forget_association),
            (evt.EVT_CONN_CLOSE, self._forget_association),
            (evt.EVT_CONN_OPEN, set_no_delay),
        ]
        self._recorder = InstanceRecorder(self.store)
        self._server = self.ae.start_server(
            (self.settings.host, self.settings.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=server_ssl_context(self.settings.tls),
        )
        port = int(self._server.server_address[1]) if self._server is not None else self.settings.port
        log.info("DICOM SCP %s listening on %s:%d%s", self.settings.ae_title, self.settings.host, port,
                 " (TLS)" if self.settings.tls.enabled else "")
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def receiving_series(self) -> set[str]:
        """Series with an association still open (their instances may not all be here yet)."""
        with self._lock:
            return set().union(*self._series_by_assoc.values()) if self._series_by_assoc else set()

    # ----------------------------------------------------------------------------------- handlers

    def _handle_requested(self, event: evt.Event) -> None:
        """Refuse an association before negotiation: unknown caller, or not enough disk space."""
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip() if assoc.requestor.primitive else ""
        address = assoc.requestor.address
        refusal = self._refusal(calling, address)
        if refusal is None:
            return
        reason, rsd = refusal
        log.warning("refused association from %s at %s: %s", calling or "(no AE title)", address, reason)
        assoc.acse.send_reject(*rsd)
        assoc.is_rejected = True
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _refusal(self, calling: str, address: str) -> tuple[str, tuple[int, int, int]] | None:
        allowed = self.settings.allowed_callers
        if allowed:
            entry = next((a for a in allowed if a.ae_title == calling), None)
            if entry is None:
                return f"calling AE title {calling!r} is not in scp.allowed_callers", REJECT_CALLING_AE
            if entry.hosts and address not in entry.hosts:
                return f"{calling} may not call from {address}", REJECT_CALLING_AE
        free_mb = _free_mb(self.storage)
        if free_mb < self.settings.min_free_disk_mb:
            return (
                f"only {free_mb} MB free in {self.storage} (scp.min_free_disk_mb {self.settings.min_free_disk_mb})",
                REJECT_LOCAL_LIMIT,
            )
        return None

    def _forget_association(self, event: evt.Event) -> None:
        with self._lock:
            self._series_by_assoc.pop(id(event.assoc), None)

    def _handle_store(self, event: evt.Event) -> int:
        """Store one instance durably; every outcome is a DICOM status, never an exception."""
        try:
            received = self._store_instance(event)
        except InputError as exc:
            log.warning("C-STORE refused: %s", exc)
            return INVALID_UID
        except _Refused as exc:
            log.warning("C-STORE refused: %s", exc.reason)
            return exc.status
        except OSError as exc:
            log.error("C-STORE could not be written: %s", exc)
            return OUT_OF_RESOURCES
        except OncoAgentError as exc:
            log.error("C-STORE could not be recorded: %s", exc)
            return OUT_OF_RESOURCES
        if self.on_received is not None:
            self.on_received(received)
        return SUCCESS

    def _store_instance(self, event: evt.Event) -> Received:
        request = event.request
        assert isinstance(request, C_STORE)
        sop_uid = validate_uid(request.AffectedSOPInstanceUID, "Affected SOP Instance UID")
        sop_class = validate_uid(request.AffectedSOPClassUID, "Affected SOP Class UID")
        raw = event.encoded_dataset(include_meta=True)
        stream = BytesIO(raw)
        try:
            header = pydicom.dcmread(stream, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError, AttributeError) as exc:
            raise _Refused(CANNOT_UNDERSTAND, f"dataset {sop_uid} cannot be parsed: {exc}") from exc
        cut = truncation(raw, stream.tell(), header)
        if cut is not None:
            raise _Refused(CANNOT_UNDERSTAND, f"dataset {sop_uid} is truncated: {cut}")
        if str(header.get("SOPInstanceUID", "")) != sop_uid:
            raise _Refused(DATASET_DOES_NOT_MATCH, f"dataset SOP Instance UID differs from the request's {sop_uid}")
        study_uid = validate_uid(header.get("StudyInstanceUID"), "StudyInstanceUID")
        series_uid = validate_uid(header.get("SeriesInstanceUID"), "SeriesInstanceUID")
        target = instance_path(self.storage, study_uid, series_uid, sop_uid)
        with self._lock:
            self._series_by_assoc.setdefault(id(event.assoc), set()).add(series_uid)
        if target.exists() and self.store.has_instance(sop_uid):  # a stat first: new instances skip the query
            log.info("instance %s received again; already stored", sop_uid)
            return Received(sop_uid, series_uid, new=False)
        if _free_mb(self.storage) < self.settings.min_free_disk_mb:
            raise _Refused(OUT_OF_RESOURCES, "free disk space under scp.min_free_disk_mb")
        size = write_bytes_durably(target, raw, sync_dir=False)  # the recorder fsyncs the folder
        calling = event.assoc.requestor.ae_title.strip()
        attrs = {} if series_uid in self._known_series else routing_attrs(header)
        instance = Instance(sop_uid, sop_class, study_uid, series_uid, target, size, attrs, f"scp:{calling}")
        try:
            assert self._recorder is not None
            new = self._recorder.record(instance)
        except OncoAgentError:
            target.unlink(missing_ok=True)  # not recorded: not accepted, leave nothing behind
            raise
        self._known_series.add(series_uid)
        return Received(sop_uid, series_uid, new=new)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _handle_echo(event: evt.Event) -> int:
    return SUCCESS


def set_no_delay(event: evt.Event) -> None:
    """Disable Nagle's algorithm on an association's socket. DIMSE messages go out in several small writes
    (PDU header, command, data); with Nagle each waits for the peer's delayed ACK, about 40 ms per message
    on Linux, which caps one association at ~10-25 instances/s."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _free_mb(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return int(shutil.disk_usage(folder).free // (1024 * 1024))


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    assert tls.certificate is not None and tls.private_key is not None  # checked by the settings
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca_certificates is not None:
        context.load_verify_locations(str(tls.ca_certificates))
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    if tls.ca_certificates is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certificates) if
                                         tls.ca_certificates else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # PACS certificates rarely name the host the way we address it
    if tls.certificate is not None and tls.private_key is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context
