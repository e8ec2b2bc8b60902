"""What a hostile or broken peer can make the SCP hold is bounded: connections, threads, time and memory.

Real sockets on loopback against an SCP started in process; dcmtk's echoscu/storescu as the honest modality.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.store import Store
from dicom_node.scp import StorageSCP
from dicom_node.settings import AllowedCaller, ScpConfig
from tests.conftest import shared
from tests.support.net import free_port
from tests.support.pdus import associate_rq, read_pdu
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")

# A-ABORT from the service provider (PS3.8 9.3.8): type 0x07, length 4, source 2, reason 0
PROVIDER_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"
A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x02, 0x03
ANNOUNCED = 64 * 2**20  # what a hostile PDU header claims will follow


class RunningScp:
    def __init__(self, root: Path, **settings: Any) -> None:
        self.store = Store.open(f"sqlite:///{root / 'scp.db'}")
        self.settings = ScpConfig(port=free_port(), min_free_disk_mb=1, **settings)
        self.scp = StorageSCP(self.store, self.settings, root / "storage")
        self.port = self.scp.start()

    def stop(self) -> None:
        self.scp.stop()
        self.store.close()

    def timed_dcmtk(self, tool: str, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        """Run echoscu/storescu from the allowed AE (Nagle off, as a modality should); return (seconds, run)."""
        env = {**os.environ, "TCP_NODELAY": "1"}
        started = time.monotonic()
        proc = subprocess.run([tool, "-aet", "MODALITY", "-aec", self.settings.ae_title, "127.0.0.1",
                               str(self.port), *args], capture_output=True, text=True, timeout=30, env=env,
                              check=False)
        return time.monotonic() - started, proc


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[RunningScp]]:
    running: list[RunningScp] = []
    yield running
    for scp in running:
        scp.stop()


def associated(port: int) -> socket.socket:
    """A raw connection with an accepted association."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(associate_rq())
    assert read_pdu(sock)[0] == A_ASSOCIATE_AC
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the SCP sends until it closes the connection (within the socket's timeout)."""
    reply = b""
    with contextlib.suppress(ConnectionResetError):  # it may close with some of our bytes unread
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


def closed_by_peer(sock: socket.socket) -> bool:
    """Has the SCP closed this non-blocking connection (whatever it said before)?"""
    try:
        while chunk := sock.recv(4096):
            del chunk
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_silent_and_trickling_sockets_do_not_lock_out_a_modality(tmp_path: Path, started: list[RunningScp],
                                                                 ) -> None:
    scp = RunningScp(tmp_path, allowed_callers=(AllowedCaller("MODALITY"),), acse_timeout_s=8.0)
    started.append(scp)
    baseline = threading.active_count()
    # 500 sockets that connect and say nothing, 200 that trickle an A-ASSOCIATE-RQ that never ends
    attack: list[socket.socket] = []
    trickling: list[socket.socket] = []
    for i in range(700):
        sock = socket.create_connection(("127.0.0.1", scp.port), timeout=5)
        sock.setblocking(False)
        attack.append(sock)
        if i % 7 < 2:
            trickling.append(sock)
    assert len(trickling) == 200
    endless_rq = b"\x01\x00" + struct.pack(">I", 60000) + b"\x00\x01\x00\x00" + b"A" * 60000
    stop = threading.Event()

    def trickle() -> None:
        for byte in endless_rq:
            for sock in trickling:
                with contextlib.suppress(OSError):  # those the SCP has closed
                    sock.send(bytes([byte]))
            if stop.wait(0.2):
                return

    trickler = threading.Thread(target=trickle, name="test-trickler")
    trickler.start()
    try:
        wait_for(lambda: scp.scp.pending_connections() == scp.settings.max_pending_connections, 10,
                 what="the attack to fill every pending slot")
        timings = []
        for tool, args in [("echoscu", ()), ("storescu", (str(shared("mri/MR_small.dcm")),))] * 2:
            assert scp.scp.pending_connections() > 0  # the attack is still on
            elapsed, proc = scp.timed_dcmtk(tool, *args)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            timings.append((tool, elapsed))
        assert all(elapsed < 2.0 for _, elapsed in timings), timings
        assert scp.store.counts()["instances"] == 1
        # the SCP itself closes every attack socket: at once past the pending limit, the rest at ARTIM expiry
        wait_for(lambda: all(closed_by_peer(sock) for sock in attack), 20,
                 what="the SCP to close every attacking socket")
        assert scp.scp.pending_connections() == 0
    finally:
        stop.set()
        trickler.join(timeout=10)
        for sock in attack:
            sock.close()
    wait_for(lambda: threading.active_count() == baseline and not scp.scp.active_associations(), 10,
             what=f"the SCP's threads to return to {baseline}")


def test_connection_is_refused_at_once_while_the_association_limit_is_reached(
    tmp_path: Path, started: list[RunningScp]
) -> None:
    scp = RunningScp(tmp_path, max_associations=2)
    started.append(scp)
    held = [associated(scp.port) for _ in range(2)]
    wait_for(lambda: scp.scp.active_associations() == 2, 10, what="two associations")
    threads = threading.active_count()
    refused = []
    for _ in range(50):  # each refused as soon as its request is whole, with no thread started for it
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as sock:
            sock.sendall(associate_rq())
            pdu = read_pdu(sock)
            refused.append((pdu[0], pdu[7:10]))
            sock.settimeout(0.2)  # nothing follows the refusal; the peer closes (PS3.8: the SCP waits for that)
            with pytest.raises(TimeoutError):
                sock.recv(1)
    # A-ASSOCIATE-RJ: rejected-transient (2), service-provider presentation related (3), local limit (2)
    assert set(refused) == {(A_ASSOCIATE_RJ, b"\x02\x03\x02")}
    assert threading.active_count() == threads  # no thread was started for them
    for sock in held:
        sock.close()
    wait_for(lambda: scp.scp.active_associations() == 0, 10, what="the held associations to end")
    assert scp.timed_dcmtk("echoscu")[1].returncode == 0


def test_a_refused_peer_that_already_sent_its_request_still_reads_the_refusal(
    tmp_path: Path, started: list[RunningScp]
) -> None:
    """The SCP closes a refused connection only after its FIN follows the A-ASSOCIATE-RJ and what the peer sent
    is drained: closing with the request unread would send a TCP reset, which can destroy the refusal before
    the peer reads it (a peer then sees "connection reset" instead of "rejected, try later")."""
    scp = RunningScp(tmp_path, max_associations=1)
    started.append(scp)
    held = associated(scp.port)
    wait_for(lambda: scp.scp.active_associations() == 1, 10, what="the association")
    peers = [socket.create_connection(("127.0.0.1", scp.port), timeout=5) for _ in range(20)]
    for sock in peers:
        sock.sendall(associate_rq())  # the request is in flight before the SCP refuses, and it is never read
    wait_for(lambda: scp.scp.refused_connections().get("association limit", 0) == len(peers), 10,
             what="every connection refused")
    time.sleep(0.2)  # not a wait on the SCP: time for a reset, had one been sent, to reach our sockets
    for sock in peers:
        with sock:
            assert read_pdu(sock)[:1] == bytes([A_ASSOCIATE_RJ])
            assert until_closed(sock) == b""
    held.close()


def test_announced_64_mib_pdus_allocate_nothing(tmp_path: Path, started: list[RunningScp]) -> None:
    scp = RunningScp(tmp_path, max_associations=40)
    started.append(scp)
    assert scp.timed_dcmtk("echoscu")[1].returncode == 0
    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    sockets = []
    for i in range(100):
        kind = i % 3
        if kind == 2:  # an association, then a P-DATA-TF over the 1 MiB we advertised
            sock = associated(scp.port)
            sock.sendall(b"\x04\x00" + struct.pack(">I", ANNOUNCED))
        else:  # a P-DATA-TF or an A-ASSOCIATE-RQ header as the first PDU
            sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
            sock.sendall((b"\x04\x00", b"\x01\x00")[kind] + struct.pack(">I", ANNOUNCED))
        sockets.append(sock)
    replies = [until_closed(sock) for sock in sockets]  # each within the socket timeout
    rss_growth = process.memory_info().rss - rss_before
    for sock in sockets:
        sock.close()
    assert {reply for reply in replies} <= {PROVIDER_ABORT, b""}
    assert replies.count(PROVIDER_ABORT) >= 90
    assert rss_growth < 50 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
    elapsed, echo = scp.timed_dcmtk("echoscu")
    assert echo.returncode == 0 and elapsed < 2.0, (elapsed, echo.stdout + echo.stderr)


DEADLINE_S = 1.5


@pytest.mark.parametrize("phase", ["request", "message", "idle"])
def test_a_trickling_or_idle_peer_loses_its_slot_when_its_deadline_passes(
    tmp_path: Path, started: list[RunningScp], phase: str
) -> None:
    timeouts = {"request": "acse_timeout_s", "message": "dimse_timeout_s", "idle": "network_timeout_s"}
    scp = RunningScp(tmp_path, **{timeouts[phase]: DEADLINE_S})
    started.append(scp)
    if phase == "request":  # the A-ASSOCIATE-RQ itself, one byte at a time (ARTIM: for the whole request)
        sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
        stream = associate_rq()
    else:  # a P-DATA-TF, one byte at a time (a deadline for the whole message), or nothing at all
        sock = associated(scp.port)
        stream = b"\x04\x00" + struct.pack(">I", 200) + b"\x00" * 200 if phase == "message" else b""
    sock.settimeout(0.2)
    reply = b""
    started_at = time.monotonic()
    closed_at = None
    for position in range(len(stream) or 10**6):
        if stream:
            try:
                sock.send(stream[position:position + 1])
            except OSError:  # closed by the SCP
                closed_at = time.monotonic()
                break
        try:
            chunk = sock.recv(4096)  # waits up to 0.2 s: one byte per 0.2 s
        except TimeoutError:
            if time.monotonic() - started_at > DEADLINE_S + 10:
                break
            continue
        except ConnectionResetError:
            chunk = b""
        reply += chunk
        if not chunk:
            closed_at = time.monotonic()
            break
    sock.close()
    assert closed_at is not None, f"still open {DEADLINE_S + 10} s after the {phase} began"
    assert DEADLINE_S - 0.25 <= closed_at - started_at <= DEADLINE_S + 1.0, closed_at - started_at
    assert reply == (b"" if phase == "request" else PROVIDER_ABORT)  # ARTIM expiry: close (PS3.8 9.2)
    wait_for(lambda: not scp.scp.active_associations() and not scp.scp.pending_connections(), 5,
             what="the slot to be free")
    assert scp.timed_dcmtk("echoscu")[1].returncode == 0
