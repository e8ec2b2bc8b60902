"""The association acceptor: DICOM upper layer (PS3.8) for incoming associations, one thread each.

Why not pynetdicom's server: its reactors poll (two threads per association, each sleeping a millisecond per
turn), which caps one association at a few hundred small instances per second before any work is done. Here a
thread per association blocks on its socket, reads whole PDUs, and answers as soon as the handler returns.
The PDU and primitive classes and the presentation context negotiation are pynetdicom's. This module owns the
listener and the connections until their A-ASSOCIATE-RQ is whole; :mod:`dicom_node.association` owns one
association from then on (AC or RJ, P-DATA fragments → DIMSE messages → handler → response, A-RELEASE and
A-ABORT).

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
import threading
import time
from collections import Counter

from pynetdicom.presentation import build_context

from dicom_node.association import (
    A_ASSOCIATE_RQ_TYPE,
    MAX_ASSOCIATE_RQ_LENGTH,
    REJECT_LOCAL_LIMIT,
    AcceptorSettings,
    Association,
    AssociationInfo,
    Closed,
    Policy,
    StoreHandler,
    pdu_length,
    reject,
)
from dicom_node.association_events import AssociationReports
from dicom_node.errors import PeerError
from dicom_node.pdu_stream import ABORT_PDU
from dicom_node.records import AssociationObserver, RefusalReason

log = logging.getLogger(__name__)

LINGER_S = 2.0  # how long a refused connection may take to read its refusal and close

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
    request is whole runs an :class:`~dicom_node.association.Association` in a thread of its own, at most
    ``max_associations`` at once.

    Bounds: while ``max_associations`` associations are open a new connection is refused as soon as its
    A-ASSOCIATE-RQ is whole (an A-ASSOCIATE-RJ, rejected-transient, local limit exceeded: PS3.8 answers a
    request, so the refusal waits for it, without a thread). After a refusal the peer closes the connection
    (what it still sends is drained); we close it after ``LINGER_S`` if it does not. At most
    ``max_pending_connections`` connections wait for their request; when all are taken, the one that has
    waited longest is refused the same way and the new one takes its place, so that silent or trickling
    sockets cannot lock an honest peer out (it sends its request within milliseconds of connecting).
    """

    def __init__(self, settings: AcceptorSettings, policy: Policy, on_store: StoreHandler, on_closed: Closed,
                 observer: AssociationObserver | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.on_store = on_store
        self.on_closed = on_closed
        self.reports = AssociationReports(observer)
        self.on_accepted: Closed = self.reports.accepted
        self.supported = [build_context(abstract, list(syntaxes)) for abstract, syntaxes in settings.contexts]
        self.refused: Counter[str] = Counter()  # connections refused or dropped before association, by reason
        self._lock = threading.Lock()
        self._active: dict[int, socket.socket] = {}
        self._pending: dict[int, _Pending] = {}  # oldest first; touched only by the acceptor thread
        self._pending_count = 0
        self._lingering: dict[int, tuple[socket.socket, float]] = {}  # refused: (socket, close-by deadline)
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
    def listening(self) -> bool:
        """The acceptor thread is running (it accepts connections)."""
        return self._thread is not None and self._thread.is_alive() and not self._closing

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
                for key, _ in selector.select(self._next_timeout()):
                    if key.fileobj is listener:
                        self._accept_all(listener)
                    elif id(key.fileobj) in self._lingering:
                        self._drain(self._lingering[id(key.fileobj)][0])
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
            for sock, _ in list(self._lingering.values()):
                self._close(sock)
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
                    self._drop(next(iter(self._pending.values())), reject(*REJECT_LOCAL_LIMIT), "no resources")
                else:
                    time.sleep(0.05)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers must not wait for an ACK
            if len(self._pending) >= self.settings.max_pending_connections:
                oldest = next(iter(self._pending.values()))
                self._warn("%d connection(s) without an A-ASSOCIATE-RQ (scp.max_pending_connections): refused the "
                           "one from %s that waited longest; %d so far", len(self._pending), oldest.address,
                           self.refused["pending limit"] + 1)
                self._drop(oldest, reject(*REJECT_LOCAL_LIMIT), "pending limit")
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
                self.reports.refused(address, RefusalReason.TLS, str(exc))
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
                wanted = 6 - len(buffer) if len(buffer) < 6 else 6 + pdu_length(buffer) - len(buffer)
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
                    if pdu_length(buffer) > MAX_ASSOCIATE_RQ_LENGTH:
                        log.info("connection from %s: A-ASSOCIATE-RQ of %d bytes is over the %d byte limit",
                                 pending.address, pdu_length(buffer), MAX_ASSOCIATE_RQ_LENGTH)
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
            self._refuse(sock, pending.address, "association limit")
            return
        sock.setblocking(True)
        threading.Thread(target=self._serve, args=(sock, pending.address, request),
                         name=f"dicom-assoc-{pending.address}", daemon=True).start()

    def _next_timeout(self) -> float | None:
        deadlines = [deadline for _, deadline in self._lingering.values()]
        if self._pending:  # all wait as long: the oldest expires first
            deadlines.append(next(iter(self._pending.values())).deadline)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire(self, now: float) -> None:
        for sock, deadline in list(self._lingering.values()):
            if deadline <= now:
                self._close(sock)
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
        self.reports.dropped(pending.address, reason)
        if farewell is not None and not pending.handshaking:
            self._say_goodbye(pending.sock, farewell)
        else:
            with contextlib.suppress(OSError):
                pending.sock.close()

    def _refuse(self, conn: socket.socket, address: str, reason: str) -> None:
        """Refuse a connection whose A-ASSOCIATE-RQ is whole: A-ASSOCIATE-RJ (transient, local limit)."""
        self.refused[reason] += 1
        self.reports.refused(address, RefusalReason.ASSOCIATION_LIMIT, reason)
        self._warn("refused connection from %s: already %d association(s) open (scp.max_associations); %d so far",
                   address, self.settings.max_associations, self.refused[reason])
        self._say_goodbye(conn, reject(*REJECT_LOCAL_LIMIT))

    def _say_goodbye(self, sock: socket.socket, farewell: bytes) -> None:
        """Send ``farewell`` (an A-ASSOCIATE-RJ or A-ABORT) and wait, draining what the peer sends, for the
        peer to close the connection, closing it ourselves after ``LINGER_S`` (PS3.8 Sta13: the acceptor awaits
        the transport close under ARTIM). Closing at once races the peer: it may see the transport close before
        it has taken in the farewell (pynetdicom then reports an abort, not a rejection), and closing with
        unread data sends a TCP reset. At most ``max_pending_connections`` linger; beyond that a socket is
        closed at once."""
        assert self._selector is not None
        try:
            sock.send(farewell)  # small: fits the empty send buffer, never blocks
            if len(self._lingering) >= self.settings.max_pending_connections:
                raise OSError("too many refused connections lingering")
            self._selector.register(sock, selectors.EVENT_READ)
        except (OSError, ssl.SSLError, ValueError, KeyError):
            self._close(sock)
            return
        self._lingering[id(sock)] = (sock, time.monotonic() + LINGER_S)

    def _drain(self, sock: socket.socket) -> None:
        """Discard what a refused peer still sends; close once it closes (or on error)."""
        try:
            for _ in range(16):
                if not sock.recv(65536):
                    break
            else:
                return  # still talking: the linger deadline ends it
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError):
            pass
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self._lingering.pop(id(sock), None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _warn(self, message: str, *args: object) -> None:
        """Log a warning, at most once a second: a flood of refusals is not a flood of log lines."""
        now = time.monotonic()
        if now >= self._quiet_until:
            log.warning(message, *args)
            self._quiet_until = now + 1.0

    # ------------------------------------------------------------------------------ association threads

    def _serve(self, conn: socket.socket, address: str, request: bytes) -> None:
        info = AssociationInfo("", "", address)
        self.reports.begun(info)

        def finish() -> None:  # before an A-RELEASE-RP goes out, and again (a no-op then) when the thread ends
            with self._lock:
                known = self._active.pop(id(conn), None) is not None
            if known and info.called_ae:
                self.on_closed(info)

        try:
            Association(self, conn, info, finish).run(request)
        except PeerError as exc:
            log.info("association from %s at %s ended: %s", info.calling_ae or "(unknown)", address, exc)
        except Exception:  # a handler bug must not take the listener down
            log.exception("association from %s at %s failed", info.calling_ae or "(unknown)", address)
        finally:
            finish()
            with contextlib.suppress(OSError):
                conn.close()
            self.reports.ended(info)
