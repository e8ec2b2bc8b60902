"""Play a stream to an SCP over one TCP connection, and a well-formed C-ECHO for the liveness check."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass

from tests.fuzz import wire
from tests.fuzz.streams import Ending, Stream


@dataclass(frozen=True)
class Outcome:
    reply: bytes  # what the SCP sent
    whole: bool  # the SCP closed the connection and we read everything it sent before (HALF_CLOSE and STALL)
    hung: bool  # the SCP neither answered nor closed within the peer's timeout


def play(port: int, stream: Stream, timeout_s: float) -> Outcome:
    """Send ``stream`` and end it its way; read until the SCP closes when the ending says so."""
    deadline = time.monotonic() + timeout_s
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for chunk in stream.chunks:
                sock.sendall(chunk)
        except OSError:  # the SCP closed (an abort, a refusal): what it said is still to be read
            pass
        if stream.ending in (Ending.CLOSE, Ending.RESET):
            if stream.ending is Ending.RESET:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Outcome(b"", whole=False, hung=False)
        if stream.ending is Ending.HALF_CLOSE:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        return _read_until_closed(sock, deadline)
    finally:
        sock.close()


def _read_until_closed(sock: socket.socket, deadline: float) -> Outcome:
    reply = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome(bytes(reply), whole=False, hung=True)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return Outcome(bytes(reply), whole=False, hung=True)
        except OSError:  # reset: the SCP closed with our bytes unread; what it sent before may be lost
            return Outcome(bytes(reply), whole=False, hung=False)
        if not chunk:
            return Outcome(bytes(reply), whole=True, hung=False)
        reply += chunk


def _read_pdu(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack_from(">I", data, 2)[0]:
        want = 6 - len(data) if len(data) < 6 else 6 + struct.unpack_from(">I", data, 2)[0] - len(data)
        chunk = sock.recv(want)
        if not chunk:
            raise ConnectionError(f"the SCP closed the connection after {data[:16].hex()}")
        data += chunk
    return data


def echo(port: int, timeout_s: float) -> int:
    """A well-formed association with one C-ECHO and a release; the C-ECHO's status. Raises when anything
    else happens (a refusal, an abort, a timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(wire.associate_rq())
        accepted = _read_pdu(sock)
        if accepted[0] != wire.A_ASSOCIATE_AC:
            raise ConnectionError(f"association not accepted: {accepted[:12].hex()}")
        command = wire.command_set(wire.C_ECHO_RQ, 1, wire.VERIFICATION)
        sock.sendall(wire.pdu(wire.P_DATA_TF, wire.pdv(wire.ECHO_CONTEXT, wire.COMMAND | wire.LAST, command)))
        answer = _read_pdu(sock)
        (field, status, _), = wire.responses(answer)
        if field != 0x8030:
            raise ConnectionError(f"expected a C-ECHO-RSP, got command field 0x{field:04X}")
        sock.sendall(wire.RELEASE_RQ)
        released = _read_pdu(sock)
        if released[0] != wire.A_RELEASE_RP:
            raise ConnectionError(f"release not confirmed: {released[:12].hex()}")
        return status
