"""An association's socket as a stream of PDUs: every read under a deadline, every PDU under a length bound,
and as few system calls as a message allows.

A modality sends a C-STORE as two or more PDUs back to back (command, then dataset); a small instance fits
in one read. What arrives beyond the PDU being read waits in a read-ahead buffer of at most ``READ_AHEAD``
bytes (the next PDU's header and, for small PDUs, all of it); a PDU longer than what is buffered is read
straight into its own buffer, which is never reused, so fragments handed out as views of it stay valid.

The socket timeout is a deadline's stand-in: it is set to the time left only when it would otherwise
overshoot the deadline by more than the slack (a tenth of the time left, at most half a second), so a
steady stream of messages does not pay a system call per read to re-arm it. A read that times out before
its deadline (the timeout was left short by an earlier, nearer deadline) is re-armed and tried again. On a
plain TCP socket the timeout is the kernel's (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket): Python's
own socket timeout polls before every read and write, two more system calls per C-STORE. A TLS socket keeps
Python's timeout (a TLS record cut by a kernel timeout could not be resumed).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time

from dicom_node.errors import PeerError

READ_AHEAD = 64 * 2**10
ABORT_PDU = b"\x07\x00" + struct.pack(">I", 4) + b"\x00\x00\x02\x00"  # A-ABORT, source: service provider
_MAX_SLACK_S = 0.5


class PduStream:
    """PDUs in and out of ``sock`` (a connected socket, blocking or with a timeout; TLS or not)."""

    def __init__(self, sock: socket.socket, max_pdu: int, send_timeout_s: float) -> None:
        self.sock = sock
        self.max_pdu = max_pdu  # longest PDU body we accept (what we advertised)
        self.send_timeout_s = send_timeout_s
        self._ahead = bytearray()  # received, not yet handed out
        self._scratch = bytearray(READ_AHEAD)
        self._timeout: float | None = None  # what the socket is set to
        self._kernel_timeouts = not isinstance(sock, ssl.SSLSocket)
        if self._kernel_timeouts:
            sock.settimeout(None)  # blocking: the kernel's timeouts bound each call

    @property
    def buffered(self) -> int:
        return len(self._ahead)

    def wait_for_data(self, deadline: float, what: str) -> None:
        """Block until at least one byte is here (buffered or new), by the monotonic ``deadline``."""
        if not self._ahead:
            self._fill(deadline, what)

    def read_pdu(self, deadline: float, what: str) -> tuple[int, memoryview]:
        """The next PDU (type, the whole PDU as a view of a buffer of its own) by the monotonic ``deadline``.
        A PDU longer than ``max_pdu`` is a :class:`PeerError` after an A-ABORT, before anything is allocated."""
        while len(self._ahead) < 6:
            self._fill(deadline, what)
        kind, length = self._ahead[0], struct.unpack_from(">I", self._ahead, 2)[0]
        if length > self.max_pdu:
            self.abort()
            raise PeerError(f"PDU of {length} bytes is over the {self.max_pdu} bytes we advertised")
        buffer = bytearray(6 + length)
        view = memoryview(buffer)
        got = min(len(buffer), len(self._ahead))
        view[:got] = self._ahead[:got]
        del self._ahead[:got]
        while got < len(buffer):
            got += self._recv_into(view[got:], deadline, what)
        return kind, view

    def send(self, data: bytes) -> None:
        try:
            self._arm(self.send_timeout_s / 2, self.send_timeout_s)
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerError(f"connection lost: {exc}") from exc

    def abort(self) -> None:
        with contextlib.suppress(PeerError):
            self.send(ABORT_PDU)

    def _fill(self, deadline: float, what: str) -> None:
        n = self._recv_into(memoryview(self._scratch), deadline, what)
        self._ahead += memoryview(self._scratch)[:n]

    def _recv_into(self, view: memoryview, deadline: float, what: str) -> int:
        """One read into ``view``: at least one byte, by the monotonic ``deadline``."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self._arm(0.0, remaining + min(_MAX_SLACK_S, remaining / 10), remaining)
                n = self.sock.recv_into(view, len(view))
            except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: the kernel's SO_RCVTIMEO
                if deadline - time.monotonic() > 0:
                    self._timeout = None  # it was shorter than this deadline: re-armed to it above
                    continue
                self.abort()
                raise PeerError(f"no {what} by its deadline") from exc
            except OSError as exc:
                raise PeerError(f"connection lost: {exc}") from exc
            if n == 0:
                raise PeerError("connection closed by the peer")
            return n

    def _arm(self, shortest: float, longest: float, wanted: float | None = None) -> None:
        """Leave the socket's timeout as it is when it lies within [``shortest``, ``longest``] seconds; set it to
        ``wanted`` (default ``longest``) otherwise."""
        current = self._timeout
        if current is None or not shortest <= current <= longest:
            self._timeout = value = longest if wanted is None else wanted
            if not self._kernel_timeouts:
                self.sock.settimeout(value)
                return
            seconds, micro = int(value), int((value - int(value)) * 1e6)
            timeval = struct.pack("ll", seconds, micro if seconds or micro else 1)  # zero would mean "never"
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
