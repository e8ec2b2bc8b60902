"""One DICOM association (PS3.8 upper layer) once its A-ASSOCIATE-RQ is whole, and the PDU encoding it needs.

:class:`Association` runs in the thread :class:`~dicom_node.acceptor.AssociationServer` starts for it: it
negotiates (policy, presentation contexts, roles), then turns P-DATA-TF fragments into DIMSE messages, hands
C-STORE datasets to the handler as their fragments arrive and answers, until the peer releases or aborts.
Every read has a deadline (``network_timeout_s`` idle between messages, ``dimse_timeout_s`` for a whole
message plus the time its bytes earn at ``MIN_TRANSFER_RATE``), every PDU a length bound
(``MAX_PDU_ADVERTISED``), and a protocol violation gets an A-ABORT.

The message state machine (PS3.7 chapter 9, PS3.8 9.3.5): a message is its command fragments, then, when its
command announces one, its dataset fragments, all on the presentation context of its first fragment. A
fragment on another context, a new command while a dataset is incomplete, or a dataset fragment without a
command is a protocol violation: A-ABORT, and what the handler had of that dataset is discarded. C-CANCEL-RQ
has no response (PS3.7 9.3.2.3): it is ignored (a C-STORE cannot be cancelled once its dataset is here); any
other request we do not perform gets a response with status 0x0211 (unrecognised operation). An unexpected
error of the handler aborts the association, and the dataset in progress is discarded.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from dicom_node.dimse import C_ECHO_RQ, C_STORE_RQ, Command, CommandError, read_command, response
from dicom_node.errors import PeerError
from dicom_node.pdu_stream import PduStream

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "2.25.158322836422231640287121674177838996716"  # uuid5(NAMESPACE_URL, "oncoagent")
IMPLEMENTATION_VERSION = "ONCOAGENT_1"

A_ASSOCIATE_RQ_TYPE, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x01, 0x04, 0x05, 0x07
MAX_PDU_ADVERTISED = 1 * 2**20  # what peers may send us in one PDU; a longer one is aborted
# A message must be whole within dimse_timeout_s, plus one second for every MIN_TRANSFER_RATE bytes of it that
# arrived: a multi-GB whole-slide instance over a slow link keeps going, a peer trickling below this rate does not.
MIN_TRANSFER_RATE = 64 * 2**10  # bytes per second
MAX_ASSOCIATE_RQ_LENGTH = 256 * 2**10  # hundreds of presentation contexts; a longer request is aborted

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)

C_CANCEL_RQ = 0x0FFF  # PS3.7 E.1: no response, no dataset
# DIMSE statuses the association answers itself (PS3.7 annex C)
SUCCESS, CANNOT_UNDERSTAND, SOP_CLASS_NOT_SUPPORTED, UNRECOGNIZED_OPERATION = 0x0000, 0xC210, 0x0122, 0x0211


# An AE title is 16 bytes of the default character repertoire without backslash and control characters
# (PS3.5 6.2, VR AE), padded with spaces; some devices pad with NUL bytes instead, which is tolerated.
_AE_TITLE_BYTES = frozenset(range(0x20, 0x7F)) - {0x5C}
_CALLED_AE, _CALLING_AE = slice(10, 26), slice(26, 42)  # offsets in the A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)


def read_ae_titles(pdu: bytes) -> tuple[bytes, tuple[str, tuple[int, int, int]] | None]:
    """The request with NUL padding of its AE titles made spaces, and why a title cannot be read (with the
    A-ASSOCIATE-RJ that says so) or None. Offending bytes are named escaped: a peer's title can neither break
    nor forge a log line."""
    if len(pdu) < _CALLING_AE.stop:
        return pdu, None  # too short to hold them: the decoder's error says so
    called, calling = (pdu[where].rstrip(b"\x00").ljust(16) for where in (_CALLED_AE, _CALLING_AE))
    pdu = pdu[:_CALLED_AE.start] + called + calling + pdu[_CALLING_AE.stop:]
    for name, title, rsd in (("called", called, REJECT_CALLED_AE), ("calling", calling, REJECT_CALLING_AE)):
        if not set(title) <= _AE_TITLE_BYTES:
            return pdu, (f"{name} AE title {title.rstrip()!r} is not a DICOM AE title (printable ASCII without "
                         "backslash)", rsd)
    return pdu, None


@dataclass
class AssociationInfo:
    """What a handler may know about the association a message came on."""

    calling_ae: str
    called_ae: str
    address: str
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (abstract syntax, transfer syntax)
    refusal: tuple[str, tuple[int, int, int]] | None = None  # when refused: (reason, A-ASSOCIATE-RJ fields)
    instances_stored: int = 0


class DatasetSink(Protocol):
    """Where the dataset of one C-STORE goes, fragment by fragment, as it arrives (see :mod:`dicom_node.scp`)."""

    def write(self, fragment: memoryview) -> None:
        """Take the next fragment; ``fragment`` is valid only until this call returns, unless kept whole."""

    def finish(self) -> int:
        """The last fragment is in: keep the instance, return the DIMSE status to answer."""

    def discard(self) -> None:
        """The message will not complete (abort, protocol error, internal error): leave nothing behind.
        Called in every case once the message is over, also after :meth:`finish`; must not raise."""


Policy = Callable[[str, str], tuple[str, tuple[int, int, int]] | None]  # (calling AE, address) -> refusal
StoreHandler = Callable[[AssociationInfo, Command, str], DatasetSink]  # (assoc, command, transfer syntax)
Closed = Callable[[AssociationInfo], None]


@dataclass(frozen=True)
class AcceptorSettings:
    ae_title: str
    contexts: tuple[tuple[str, tuple[str, ...]], ...]  # (abstract syntax, transfer syntaxes)
    max_associations: int = 10
    max_pending_connections: int = 64  # connections without a whole A-ASSOCIATE-RQ yet (no thread each)
    require_called_ae_title: bool = False
    acse_timeout_s: float = 30.0  # for the TLS handshake and the whole A-ASSOCIATE-RQ (ARTIM)
    dimse_timeout_s: float = 60.0  # for the whole of a message once its first PDU has begun
    network_timeout_s: float = 60.0  # idle, between messages
    ssl_context: ssl.SSLContext | None = None

class Server(Protocol):
    """What an association needs of the server that accepted it."""

    settings: AcceptorSettings
    supported: list[PresentationContext]
    policy: Policy
    on_store: StoreHandler
    on_accepted: Closed


class Association:
    """One accepted connection: negotiation (A-ASSOCIATE-RQ → policy → AC or RJ), then P-DATA fragments →
    DIMSE messages → the handler → responses, until A-RELEASE or A-ABORT; every read under its deadline."""

    def __init__(self, server: Server, sock: socket.socket, info: AssociationInfo,
                 finish: Callable[[], None]) -> None:
        self.server = server
        self.finish = finish
        self.stream = PduStream(sock, MAX_PDU_ADVERTISED, server.settings.dimse_timeout_s)
        self.info = info
        self.peer_max_pdu = 0
        self._sink: DatasetSink | None = None  # the dataset of the message in progress, if any

    def run(self, request: bytes) -> None:
        if self._negotiate(request):
            self._messages()

    # ------------------------------------------------------------------------------ association set-up

    def _negotiate(self, pdu: bytes) -> bool:
        pdu, refusal = read_ae_titles(pdu)
        if refusal is not None:  # before pynetdicom decodes it: it logs a traceback for each such title
            return self._refuse(refusal)
        request = A_ASSOCIATE_RQ()
        try:
            request.decode(pdu)
            primitive = request.to_primitive()
        except Exception as exc:  # pynetdicom raises assorted errors on malformed PDUs
            self._abort()
            raise PeerError(f"malformed A-ASSOCIATE-RQ: {exc}") from exc
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        self.info.calling_ae, self.info.called_ae = calling, called
        refusal = self._refusal(request, primitive, calling, called)
        if refusal is not None:
            return self._refuse(refusal)
        roles = {UID(str(item.sop_class_uid)): (item.scu_role, item.scp_role)
                 for item in primitive.user_information if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
        results, role_items = negotiate_as_acceptor(primitive.presentation_context_definition_list,
                                                    self.server.supported, roles or None)
        for item in primitive.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = int(item.maximum_length_received or 0)
        self.info.contexts = {int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                              for cx in results if cx.result == 0x00 and cx.context_id is not None}
        self._send(_accept(primitive, results, role_items))
        self.server.on_accepted(self.info)
        log.info("association from %s at %s accepted: %d of %d presentation context(s)", calling,
                 self.info.address, len(self.info.contexts), len(results))
        return True

    def _refuse(self, refusal: tuple[str, tuple[int, int, int]]) -> bool:
        reason, rsd = refusal
        self.info.refusal = refusal
        log.warning("refused association from %s at %s: %s", self.info.calling_ae or "(no AE title)",
                    self.info.address, reason)
        self._send(reject(*rsd))
        return False

    def _refusal(self, request: A_ASSOCIATE_RQ, primitive: A_ASSOCIATE, calling: str, called: str,
                 ) -> tuple[str, tuple[int, int, int]] | None:
        settings = self.server.settings
        if request.protocol_version != 0x0001:
            return f"protocol version {request.protocol_version} is not supported", REJECT_PROTOCOL_VERSION
        if str(primitive.application_context_name) != APPLICATION_CONTEXT:
            return f"application context {primitive.application_context_name} is not DICOM's", \
                REJECT_APPLICATION_CONTEXT
        if settings.require_called_ae_title and called != settings.ae_title:
            return f"called AE title {called!r} is not {settings.ae_title!r}", REJECT_CALLED_AE
        policy = self.server.policy(calling, self.info.address)
        if policy is not None:
            return policy
        return None

    # ------------------------------------------------------------------------------ messages

    def _messages(self) -> None:
        try:
            self._message_loop()
        except PeerError:
            raise
        except Exception:
            self._abort()  # our own failure: the peer hears an A-ABORT, not a silent close (PS3.8 9.3.8)
            raise
        finally:
            if self._sink is not None:  # aborted, violated or failed mid-dataset: nothing of it is kept
                self._sink.discard()
                self._sink = None

    def _message_loop(self) -> None:
        command: list[bytes] = []  # fragments of the command set being received
        request: Command | None = None  # a command whose dataset is being received
        context_id = 0  # the presentation context of the message in progress
        settings = self.server.settings
        message_deadline = 0.0
        while True:
            # between messages the peer may be idle for network_timeout_s; a message, once its first PDU has
            # begun, must be whole within dimse_timeout_s plus one second per MIN_TRANSFER_RATE bytes received
            # (a deadline for all its PDUs, not for each recv)
            if request is None and not command:
                self.stream.wait_for_data(time.monotonic() + settings.network_timeout_s,
                                          "message (scp.network_timeout_s)")
                message_deadline = time.monotonic() + settings.dimse_timeout_s  # from its first byte
            kind, pdu = self.stream.read_pdu(message_deadline, "the rest of a message (scp.dimse_timeout_s)")
            message_deadline += len(pdu) / MIN_TRANSFER_RATE  # a large dataset earns time as it keeps arriving
            if kind == A_RELEASE_RQ:  # mid-message too: the incomplete dataset is discarded on the way out
                self.finish()  # the association is over for our bookkeeping before the peer hears so
                self._send(b"\x06\x00" + struct.pack(">I", 4) + b"\x00" * 4)  # A-RELEASE-RP
                log.info("association from %s released", self.info.calling_ae)
                return
            if kind == A_ABORT:
                raise PeerError("aborted by the peer")
            if kind != P_DATA_TF:
                self._violation(f"unexpected PDU type 0x{kind:02X}")
            try:
                pdvs = _pdvs(pdu)
            except PeerError as exc:
                self._violation(str(exc))
            for pc_id, control, value in pdvs:
                is_command, last = bool(control & 0x01), bool(control & 0x02)
                if (command or request is not None) and pc_id != context_id:
                    self._violation(f"a fragment on presentation context {pc_id} inside a message on {context_id}")
                if is_command:
                    if request is not None:  # PS3.8 9.3.5.1: no new command before the dataset is whole
                        self._violation(f"a new command arrived before the dataset of message {request.message_id}"
                                        " was whole")
                    command.append(bytes(value))
                    context_id = pc_id
                    if last:
                        data = b"".join(command)
                        command = []
                        if _command_field(data) == C_CANCEL_RQ:  # no Message ID of its own, no response
                            log.debug("C-CANCEL-RQ ignored: no response (PS3.7 9.3.2.3); nothing here runs long")
                            continue
                        try:
                            request = read_command(data)
                        except CommandError as exc:
                            self._violation(str(exc))
                        request = self._begin(request, context_id)
                elif request is None:
                    self._violation("a dataset fragment arrived without its command")
                else:
                    assert self._sink is not None
                    self._sink.write(value)
                    if last:
                        status = self._sink.finish()
                        self._sink = None
                        self._send_command(context_id, response(request, status))
                        request = None

    def _begin(self, request: Command, context_id: int) -> Command | None:
        """A request's command is whole: answer it now (no dataset) or get ready for its dataset. Returns the
        request while its dataset is awaited."""
        context = self.info.contexts.get(context_id)
        if context is None:
            self._violation(f"message on presentation context {context_id}, which was not accepted")
        abstract, transfer = context
        field = request.command_field
        status = UNRECOGNIZED_OPERATION
        if field == C_ECHO_RQ:
            status = SUCCESS
        elif field == C_STORE_RQ:
            if not request.has_dataset:
                status = CANNOT_UNDERSTAND
            elif request.affected_sop_class != abstract:
                status = SOP_CLASS_NOT_SUPPORTED  # on this context
            else:
                self._sink = self.server.on_store(self.info, request, transfer)
                return request
        if not request.has_dataset:
            self._send_command(context_id, response(request, status))
            return None
        self._sink = _Drain(status)  # a dataset we do not keep: read and dropped, then answered
        return request

    def _violation(self, reason: str) -> NoReturn:
        self._abort()
        raise PeerError(reason)

    def _send(self, data: bytes) -> None:
        self.stream.send(data)

    def _send_command(self, context_id: int, payload: bytes) -> None:
        # a response command is ~100 bytes, far under any PDU limit: one PDV, flagged command + last
        pdv = struct.pack(">IBB", len(payload) + 2, context_id, 0x03) + payload
        self._send(b"\x04\x00" + struct.pack(">I", len(pdv)) + pdv)

    def _abort(self) -> None:
        self.stream.abort()


def pdu_length(header: bytearray) -> int:
    return int(struct.unpack_from(">I", header, 2)[0])


def _command_field(command: bytes) -> int | None:
    """The Command Field (0000,0100) of a command set, or None; read_command needs more than a C-CANCEL-RQ has."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if group == 0x0000 and element == 0x0100 and length == 2 and offset + 10 <= len(command):
            return int(struct.unpack_from("<H", command, offset + 8)[0])
        offset += 8 + length
    return None


class _Drain:
    """The sink of a dataset that is not kept: its fragments are dropped, then ``status`` is answered."""

    def __init__(self, status: int) -> None:
        self.status = status

    def write(self, fragment: memoryview) -> None:
        pass

    def finish(self) -> int:
        return self.status

    def discard(self) -> None:
        pass


def _pdvs(pdu: memoryview) -> list[tuple[int, int, memoryview]]:
    """(presentation context id, message control header, fragment) of each PDV item of a P-DATA-TF PDU; the
    fragments are views into ``pdu``, not copies."""
    items = []
    offset, end = 6, len(pdu)
    while offset < end:
        if offset + 6 > end:
            raise PeerError("P-DATA-TF ends inside a PDV item header")
        length = struct.unpack_from(">I", pdu, offset)[0]
        if length < 2 or offset + 4 + length > end:
            raise PeerError("PDV item length does not fit its PDU")
        items.append((pdu[offset + 4], pdu[offset + 5], pdu[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


def reject(result: int, source: int, reason: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, reason
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _accept(request: A_ASSOCIATE, results: list[PresentationContext],
            roles: list[SCP_SCU_RoleSelectionNegotiation]) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result, primitive.result_source = 0x00, 0x01
    primitive.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = MAX_PDU_ADVERTISED
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    primitive.user_information = [max_length, implementation, version, *roles]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())
