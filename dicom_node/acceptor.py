"""The association acceptor: DICOM upper layer (PS3.8) for incoming associations, one thread each.

Why not pynetdicom's server: its reactors poll (two threads per association, each sleeping a millisecond per
turn), which caps one association at a few hundred small instances per second before any work is done. Here a
thread per association blocks on its socket, reads whole PDUs, and answers as soon as the handler returns.
The PDU and primitive classes and the presentation context negotiation are pynetdicom's; this module owns
only the flow: A-ASSOCIATE-RQ → policy → AC or RJ, P-DATA fragments → DIMSE messages → handler → response,
A-RELEASE and A-ABORT, timeouts, TLS and the association limit.

Everything a peer can make it hold is bounded: threads (one per open association, at most
``max_associations``; none for a connection that has not sent its whole A-ASSOCIATE-RQ: one acceptor thread
waits on those with a selector, at most ``max_pending_connections`` of them), time (the TLS handshake and the
whole request within ``acse_timeout_s``, ARTIM; ``network_timeout_s`` idle between messages; each whole
message within ``dimse_timeout_s`` of its first PDU, checked against a monotonic deadline on every read, not
per ``recv``) and memory (a request of at most 256 KiB, read as it arrives; a P-DATA-TF PDU of at most the
1 MiB we advertise, its announced length checked before anything is allocated for it: A-ABORT otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_as_acceptor

from dicom_node.dimse import C_ECHO_RQ, C_STORE_RQ, Command, CommandError, read_command, response

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "2.25.158322836422231640287121674177838996716"  # uuid5(NAMESPACE_URL, "oncoagent")
IMPLEMENTATION_VERSION = "ONCOAGENT_1"

A_ASSOCIATE_RQ_TYPE, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x01, 0x04, 0x05, 0x07
MAX_PDU_ADVERTISED = 1 * 2**20  # what peers may send us in one PDU; a longer one is aborted
MAX_ASSOCIATE_RQ_LENGTH = 256 * 2**10  # hundreds of presentation contexts; a longer request is aborted
ABORT_PDU = b"\x07\x00" + struct.pack(">I", 4) + b"\x00\x00\x02\x00"  # A-ABORT, source: service provider

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)


class PeerError(Exception):
    """The peer broke the protocol, closed the connection or went silent."""


@dataclass
class AssociationInfo:
    """What a handler may know about the association a message came on."""

    calling_ae: str
    called_ae: str
    address: str
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (abstract syntax, transfer syntax)


Policy = Callable[[str, str], tuple[str, tuple[int, int, int]] | None]  # (calling AE, address) -> refusal
StoreHandler = Callable[[AssociationInfo, Command, str, bytes], int]  # (assoc, command, transfer syntax, data)
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


class _Pending:
    """A connection whose A-ASSOCIATE-RQ is not whole yet: its bytes so far and its ARTIM deadline."""

    __slots__ = ("address", "buffer", "deadline", "handshaking", "sock")

    def __init__(self, sock: socket.socket, address: str, deadline: float, handshaking: bool) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.handshaking = handshaking
        self.buffer = bytearray()  # grows with what arrives, never to a length the peer announces


class AssociationServer:
    """Listens on ``address``. One thread (the acceptor) accepts connections and waits, with a selector and
    no thread each, for their A-ASSOCIATE-RQ (and TLS handshake) under the ARTIM deadline; a connection whose
    request is whole runs :class:`_Association` in a thread of its own, at most ``max_associations`` at once.

    Bounds: while ``max_associations`` associations are open a new connection is refused at once (an
    A-ASSOCIATE-RJ, rejected-transient, local limit exceeded; nothing read). At most
    ``max_pending_connections`` connections wait for their request; when all are taken, the one that has
    waited longest is refused the same way and the new one takes its place, so that silent or trickling
    sockets cannot lock an honest peer out (it sends its request within milliseconds of connecting).
    """

    def __init__(self, settings: AcceptorSettings, policy: Policy, on_store: StoreHandler, on_closed: Closed,
                 ) -> None:
        self.settings = settings
        self.policy = policy
        self.on_store = on_store
        self.on_closed = on_closed
        self.supported = [build_context(abstract, list(syntaxes)) for abstract, syntaxes in settings.contexts]
        self.refused: Counter[str] = Counter()  # connections refused or dropped before association, by reason
        self._lock = threading.Lock()
        self._active: dict[int, socket.socket] = {}
        self._pending: dict[int, _Pending] = {}  # oldest first; touched only by the acceptor thread
        self._pending_count = 0
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._quiet_until = 0.0

    def start(self, host: str, port: int) -> int:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._accept_loop, name="dicom-acceptor", daemon=True)
        self._thread.start()
        return int(listener.getsockname()[1])

    @property
    def active_associations(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def pending_connections(self) -> int:
        return self._pending_count

    def stop(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\x00")
        if self._thread is not None:
            self._thread.join(timeout=5)
        else:  # never started: the acceptor thread did not get to close these
            self._wake_r.close()
            self._wake_w.close()
        with self._lock:
            open_sockets = list(self._active.values())
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------------------ the acceptor thread

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._selector is not None
        selector, listener = self._selector, self._listener
        try:
            while not self._closing:
                timeout = None
                if self._pending:
                    oldest = next(iter(self._pending.values()))  # all wait as long: the oldest expires first
                    timeout = max(0.0, oldest.deadline - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.fileobj is listener:
                        self._accept_all(listener)
                    elif key.fileobj is not self._wake_r:
                        pending = self._pending.get(id(key.fileobj))
                        if pending is None:
                            continue
                        try:
                            self._advance(pending)
                        except Exception:  # a defect must not take the listener down: drop this one only
                            log.exception("connection from %s failed before its association", pending.address)
                            self._drop(pending, ABORT_PDU, "internal error")
                self._expire(time.monotonic())
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending, None, "shutdown")
            selector.close()
            listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept_all(self, listener: socket.socket) -> None:
        for _ in range(256):  # then let the waiting connections have a turn
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, or the like: free one, or wait a moment
                self._warn("could not accept a connection: %s", exc)
                if self._pending:
                    self._drop(next(iter(self._pending.values())), _reject(*REJECT_LOCAL_LIMIT), "no resources")
                else:
                    time.sleep(0.05)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers must not wait for an ACK
            with self._lock:
                full = len(self._active) >= self.settings.max_associations
            if full:  # a TLS peer has not shaken hands yet: it could not read an A-ASSOCIATE-RJ
                self._refuse(conn, address[0], "association limit", answer=self.settings.ssl_context is None)
                continue
            if len(self._pending) >= self.settings.max_pending_connections:
                oldest = next(iter(self._pending.values()))
                self._warn("%d connection(s) without an A-ASSOCIATE-RQ (scp.max_pending_connections): refused the "
                           "one from %s that waited longest; %d so far", len(self._pending), oldest.address,
                           self.refused["pending limit"] + 1)
                self._drop(oldest, _reject(*REJECT_LOCAL_LIMIT), "pending limit")
            self._add_pending(conn, address[0])

    def _add_pending(self, conn: socket.socket, address: str) -> None:
        assert self._selector is not None
        deadline = time.monotonic() + self.settings.acse_timeout_s
        sock = conn
        context = self.settings.ssl_context
        if context is not None:
            try:
                sock = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                log.warning("refused connection from %s: TLS failed: %s", address, exc)
                conn.close()
                return
        pending = _Pending(sock, address, deadline, handshaking=context is not None)
        self._pending[id(sock)] = pending
        self._pending_count = len(self._pending)
        self._selector.register(sock, selectors.EVENT_READ)
        if pending.handshaking:
            self._advance(pending)

    def _advance(self, pending: _Pending) -> None:
        """Read what the connection has for us now; hand it on once its A-ASSOCIATE-RQ is whole."""
        sock, buffer = pending.sock, pending.buffer
        try:
            if pending.handshaking:
                assert isinstance(sock, ssl.SSLSocket)
                try:
                    sock.do_handshake()
                except ssl.SSLWantReadError:
                    return
                except ssl.SSLWantWriteError:  # wake when the send buffer has room again
                    assert self._selector is not None
                    self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    return
                pending.handshaking = False
                assert self._selector is not None
                self._selector.modify(sock, selectors.EVENT_READ)
            while True:
                wanted = 6 - len(buffer) if len(buffer) < 6 else 6 + _pdu_length(buffer) - len(buffer)
                if wanted == 0:
                    break
                chunk = sock.recv(min(wanted, 65536))
                if not chunk:
                    self._drop(pending, None, "closed by the peer")
                    return
                buffer += chunk
                if len(buffer) == 6:
                    if buffer[0] != A_ASSOCIATE_RQ_TYPE:
                        log.info("connection from %s: expected an A-ASSOCIATE-RQ, got PDU type 0x%02X",
                                 pending.address, buffer[0])
                        self._drop(pending, ABORT_PDU, "protocol error")
                        return
                    if _pdu_length(buffer) > MAX_ASSOCIATE_RQ_LENGTH:
                        log.info("connection from %s: A-ASSOCIATE-RQ of %d bytes is over the %d byte limit",
                                 pending.address, _pdu_length(buffer), MAX_ASSOCIATE_RQ_LENGTH)
                        self._drop(pending, ABORT_PDU, "oversize request")
                        return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return
        except ssl.SSLError as exc:
            log.warning("refused connection from %s: TLS handshake failed: %s", pending.address, exc)
            self._drop(pending, None, "TLS handshake failed")
            return
        except OSError as exc:
            self._drop(pending, None, f"connection lost: {exc}")
            return
        self._hand_on(pending, bytes(buffer))

    def _hand_on(self, pending: _Pending, request: bytes) -> None:
        assert self._selector is not None
        self._selector.unregister(pending.sock)
        del self._pending[id(pending.sock)]
        self._pending_count = len(self._pending)
        sock = pending.sock
        with self._lock:
            full = len(self._active) >= self.settings.max_associations
            if not full:
                self._active[id(sock)] = sock
        if full:
            self._refuse(sock, pending.address, "association limit", answer=True)
            return
        sock.setblocking(True)
        threading.Thread(target=self._serve, args=(sock, pending.address, request),
                         name=f"dicom-assoc-{pending.address}", daemon=True).start()

    def _expire(self, now: float) -> None:
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.deadline > now:
                return
            log.debug("connection from %s closed: no A-ASSOCIATE-RQ within %.1f s (scp.acse_timeout_s)",
                      oldest.address, self.settings.acse_timeout_s)
            self._drop(oldest, None, "ARTIM timeout")  # PS3.8 9.2 (ARTIM expiry): close, nothing sent

    def _drop(self, pending: _Pending, farewell: bytes | None, reason: str) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(pending.sock)
        self._pending.pop(id(pending.sock), None)
        self._pending_count = len(self._pending)
        self.refused[reason] += 1
        if farewell is not None and not pending.handshaking:
            with contextlib.suppress(OSError, ssl.SSLError):
                pending.sock.send(farewell)  # small: fits the empty send buffer, never blocks
        with contextlib.suppress(OSError):
            pending.sock.close()

    def _refuse(self, conn: socket.socket, address: str, reason: str, answer: bool) -> None:
        """Refuse a connection at once, reading nothing: A-ASSOCIATE-RJ (transient, local limit) and close."""
        self.refused[reason] += 1
        self._warn("refused connection from %s: already %d association(s) open (scp.max_associations); %d so far",
                   address, self.settings.max_associations, self.refused[reason])
        if answer:
            with contextlib.suppress(OSError, ssl.SSLError):
                conn.send(_reject(*REJECT_LOCAL_LIMIT))  # small: fits the empty send buffer, never blocks
        with contextlib.suppress(OSError):
            conn.close()

    def _warn(self, message: str, *args: object) -> None:
        """Log a warning, at most once a second: a flood of refusals is not a flood of log lines."""
        now = time.monotonic()
        if now >= self._quiet_until:
            log.warning(message, *args)
            self._quiet_until = now + 1.0

    # ------------------------------------------------------------------------------ association threads

    def _serve(self, conn: socket.socket, address: str, request: bytes) -> None:
        info = AssociationInfo("", "", address)

        def finish() -> None:  # before an A-RELEASE-RP goes out, and again (a no-op then) when the thread ends
            with self._lock:
                known = self._active.pop(id(conn), None) is not None
            if known and info.called_ae:
                self.on_closed(info)

        try:
            _Association(self, conn, info, finish).run(request)
        except PeerError as exc:
            log.info("association from %s at %s ended: %s", info.calling_ae or "(unknown)", address, exc)
        except Exception:  # a handler bug must not take the listener down
            log.exception("association from %s at %s failed", info.calling_ae or "(unknown)", address)
        finally:
            finish()
            with contextlib.suppress(OSError):
                conn.close()


class _Association:
    def __init__(self, server: AssociationServer, sock: socket.socket, info: AssociationInfo,
                 finish: Callable[[], None]) -> None:
        self.server = server
        self.finish = finish
        self.sock = sock
        self.info = info
        self.peer_max_pdu = 0

    def run(self, request: bytes) -> None:
        if self._negotiate(request):
            self._messages()

    # ------------------------------------------------------------------------------ association set-up

    def _negotiate(self, pdu: bytes) -> bool:
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
            reason, rsd = refusal
            log.warning("refused association from %s at %s: %s", calling or "(no AE title)", self.info.address,
                        reason)
            self._send(_reject(*rsd))
            return False
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
        log.info("association from %s at %s accepted: %d of %d presentation context(s)", calling,
                 self.info.address, len(self.info.contexts), len(results))
        return True

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
        command: list[bytes] = []
        data: list[bytes] = []
        request: Command | None = None
        context_id = 0
        settings = self.server.settings
        message_deadline = 0.0
        while True:
            # between messages the peer may be idle for network_timeout_s; a message, once its first PDU has
            # begun, must be whole within dimse_timeout_s (a deadline for all its PDUs, not for each recv)
            within_message = request is not None or bool(command)
            if within_message:
                header = self._recv(6, message_deadline, "the rest of a message (scp.dimse_timeout_s)")
            else:
                first = bytearray(6)
                got = self._recv_some(memoryview(first), time.monotonic() + settings.network_timeout_s,
                                      "message (scp.network_timeout_s)")
                message_deadline = time.monotonic() + settings.dimse_timeout_s  # from its first byte
                header = bytes(first) if got == 6 else \
                    bytes(first[:got]) + self._recv(6 - got, message_deadline, "the rest of a message")
            kind, pdu = self._read_pdu(header, message_deadline)
            if kind == A_RELEASE_RQ:
                self.finish()  # the association is over for our bookkeeping before the peer hears so
                self._send(b"\x06\x00" + struct.pack(">I", 4) + b"\x00" * 4)  # A-RELEASE-RP
                log.info("association from %s released", self.info.calling_ae)
                return
            if kind == A_ABORT:
                raise PeerError("aborted by the peer")
            if kind != P_DATA_TF:
                self._abort()
                raise PeerError(f"unexpected PDU type 0x{kind:02X}")
            for pc_id, control, value in _pdvs(pdu):
                if request is None and not control & 0x01:
                    self._abort()
                    raise PeerError("a dataset fragment arrived before its command")
                if control & 0x01:
                    command.append(value)
                    if control & 0x02:
                        try:
                            request = read_command(b"".join(command))
                        except CommandError as exc:
                            self._abort()
                            raise PeerError(str(exc)) from exc
                        command, context_id = [], pc_id
                        if not request.has_dataset:
                            self._answer(request, context_id, b"")
                            request = None
                else:
                    data.append(value)
                    if control & 0x02:
                        assert request is not None
                        dataset = b"".join(data)
                        data.clear()  # the fragments go before the handler runs: one copy in memory, not two
                        self._answer(request, context_id, dataset)
                        del dataset
                        request = None

    def _answer(self, request: Command, context_id: int, dataset: bytes) -> None:
        context = self.info.contexts.get(context_id)
        if context is None:
            self._abort()
            raise PeerError(f"message on presentation context {context_id}, which was not accepted")
        abstract, transfer = context
        if request.command_field == C_ECHO_RQ:
            status = 0x0000
        elif request.command_field == C_STORE_RQ:
            if not request.has_dataset:
                status = 0xC210  # cannot understand
            elif request.affected_sop_class != abstract:
                status = 0x0122  # SOP class not supported on this context
            else:
                status = self.server.on_store(self.info, request, transfer, dataset)
        else:
            status = 0x0211  # unrecognised operation
        self._send_command(context_id, response(request, status))

    # ------------------------------------------------------------------------------ PDU I/O

    def _read_pdu(self, header: bytes, deadline: float) -> tuple[int, bytes]:
        kind, length = header[0], struct.unpack(">I", header[2:6])[0]
        if length > MAX_PDU_ADVERTISED:  # checked before anything is allocated for it
            self._abort()
            raise PeerError(f"PDU of {length} bytes is over the {MAX_PDU_ADVERTISED} bytes we advertised")
        return kind, header + self._recv(length, deadline, "the rest of a message (scp.dimse_timeout_s)")

    def _recv(self, size: int, deadline: float, what: str) -> bytes:
        """``size`` bytes, all by the monotonic ``deadline``, or :class:`PeerError` (after an A-ABORT when
        the deadline passed)."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            got += self._recv_some(view[got:], deadline, what)
        return bytes(buffer)

    def _recv_some(self, view: memoryview, deadline: float, what: str) -> int:
        """One read into ``view``: at least one byte, by the monotonic ``deadline``."""
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            n = self.sock.recv_into(view, len(view))
        except TimeoutError as exc:
            self._abort()
            raise PeerError(f"no {what} by its deadline") from exc
        except OSError as exc:
            raise PeerError(f"connection lost: {exc}") from exc
        if n == 0:
            raise PeerError("connection closed by the peer")
        return n

    def _send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.server.settings.dimse_timeout_s)
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerError(f"connection lost: {exc}") from exc

    def _send_command(self, context_id: int, payload: bytes) -> None:
        # a response command is ~100 bytes, far under any PDU limit: one PDV, flagged command + last
        pdv = struct.pack(">IBB", len(payload) + 2, context_id, 0x03) + payload
        self._send(b"\x04\x00" + struct.pack(">I", len(pdv)) + pdv)

    def _abort(self) -> None:
        with contextlib.suppress(PeerError):
            self._send(ABORT_PDU)


def _pdu_length(header: bytearray) -> int:
    return int(struct.unpack_from(">I", header, 2)[0])


def _pdvs(pdu: bytes) -> list[tuple[int, int, bytes]]:
    """(presentation context id, message control header, fragment) of each PDV item of a P-DATA-TF PDU."""
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


def _reject(result: int, source: int, reason: int) -> bytes:
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
