"""PduStream: PDUs read whole under one deadline, few reads, bounded length, timeouts that never overshoot."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from dicom_node.errors import PeerError
from dicom_node.pdu_stream import ABORT_PDU, PduStream


def pdu(kind: int, body: bytes) -> bytes:
    return bytes([kind, 0]) + struct.pack(">I", len(body)) + body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def test_pdus_sent_back_to_back_are_read_whole_and_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    first, second = pdu(4, b"c" * 100), pdu(4, b"d" * 70_000)  # the second longer than the read-ahead
    peer.sendall(first + second + pdu(5, b"\0" * 4))
    stream = PduStream(ours, max_pdu=1 << 20, send_timeout_s=5)
    deadline = time.monotonic() + 5
    kind, view = stream.read_pdu(deadline, "test")
    assert (kind, bytes(view)) == (4, first)
    kind, view = stream.read_pdu(deadline, "test")
    assert (kind, bytes(view)) == (4, second)
    kind, _ = stream.read_pdu(deadline, "test")
    assert kind == 5 and stream.buffered == 0


def test_a_pdu_over_the_advertised_length_is_aborted_before_its_body_is_read(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(bytes([4, 0]) + struct.pack(">I", 64 << 20))  # announces 64 MiB, sends nothing more
    stream = PduStream(ours, max_pdu=1 << 20, send_timeout_s=5)
    with pytest.raises(PeerError, match="over the 1048576 bytes"):
        stream.read_pdu(time.monotonic() + 5, "test")
    peer.settimeout(5)
    assert peer.recv(100) == ABORT_PDU


def test_a_trickling_peer_is_cut_off_at_the_deadline_of_the_whole_pdu(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    whole = pdu(4, b"x" * 200)
    stop = threading.Event()

    def trickle() -> None:
        for byte in whole:
            if stop.wait(0.05):
                return
            try:
                peer.send(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    stream = PduStream(ours, max_pdu=1 << 20, send_timeout_s=5)
    began = time.monotonic()
    try:
        with pytest.raises(PeerError, match="no test by its deadline"):
            stream.read_pdu(began + 0.5, "test")  # each byte arrives well within any per-read timeout
        assert time.monotonic() - began < 0.5 + 0.2  # the slack: a tenth of the time left, never more
    finally:
        stop.set()
        sender.join()


def test_a_timeout_left_short_by_a_near_deadline_does_not_cut_a_later_read(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    stream = PduStream(ours, max_pdu=1 << 20, send_timeout_s=5)
    peer.sendall(pdu(4, b"soon"))
    kind, view = stream.read_pdu(time.monotonic() + 0.05, "test")  # leaves the socket timeout at ~0.05 s
    assert bytes(view[6:]) == b"soon"
    assert ours.gettimeout() is None  # a plain socket blocks: the kernel's timeout bounds each call
    seconds, micro = struct.unpack("ll", ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    assert 0 < seconds + micro / 1e6 <= 0.06
    timer = threading.Timer(0.3, lambda: peer.sendall(pdu(4, b"late")))
    timer.start()
    try:
        kind, view = stream.read_pdu(time.monotonic() + 5, "test")  # arrives after several short timeouts
    finally:
        timer.join()
    assert (kind, bytes(view[6:])) == (4, b"late")
