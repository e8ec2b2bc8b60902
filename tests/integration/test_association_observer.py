"""The acceptor tells its observer of every association: accepted, then ended with the instances stored on it;
refused with a reason from a small fixed set (not allowed, over the limit, silent past ARTIM, not DICOM). A real
SCP on a free port; pynetdicom and raw sockets as peers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from agent.store import Store
from dicom_node.records import AssociationRecord, RefusalReason
from dicom_node.scp import StorageSCP
from dicom_node.settings import AllowedCaller, ScpConfig
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.support.net import free_port
from tests.support.pdus import associate_rq, read_pdu
from tests.support.waiting import wait_for

A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x02, 0x03


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, AssociationRecord]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, record: AssociationRecord) -> None:
        with self._lock:
            self.events.append((kind, record))

    def association_accepted(self, record: AssociationRecord, /) -> None:
        self._add("accepted", record)

    def association_refused(self, record: AssociationRecord, /) -> None:
        self._add("refused", record)

    def association_ended(self, record: AssociationRecord, /) -> None:
        self._add("ended", record)

    def of(self, kind: str) -> list[AssociationRecord]:
        with self._lock:
            return [r for k, r in self.events if k == kind]


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[StorageSCP, Recorder]]:
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    recorder = Recorder()
    settings = ScpConfig(port=free_port(), min_free_disk_mb=1, allowed_callers=(AllowedCaller("MODALITY"),),
                         max_associations=1, acse_timeout_s=1.0)
    node = StorageSCP(store, settings, tmp_path / "storage", observer=recorder)
    node.start()
    yield node, recorder
    node.stop()
    store.close()


def test_an_accepted_association_ends_with_its_instance_count(scp: tuple[StorageSCP, Recorder],
                                                              tmp_path: Path) -> None:
    node, recorder = scp
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=3, rows=16, columns=16, seed=81))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(str(pydicom.dcmread(series.files[0], stop_before_pixels=True).SOPClassUID))
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title="ONCOAGENT")
    assert assoc.is_established
    wait_for(lambda: recorder.of("accepted"), 10, what="the accepted event")
    assert recorder.of("ended") == []  # still open
    for path in series.files:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
    assoc.release()
    (ended,) = wait_for(lambda: recorder.of("ended"), 10, what="the ended event")
    (accepted,) = recorder.of("accepted")
    assert (ended.calling_ae, ended.called_ae, ended.address) == ("MODALITY", "ONCOAGENT", "127.0.0.1")
    assert ended.accepted and ended.instances_stored == 3 and accepted.instances_stored == 0
    assert ended.started_at <= accepted.ended_at <= ended.ended_at
    assert recorder.of("refused") == []


def test_refusals_come_with_their_reason(scp: tuple[StorageSCP, Recorder]) -> None:
    node, recorder = scp
    port = node.settings.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stranger:
        stranger.sendall(associate_rq(calling="STRANGER"))
        assert read_pdu(stranger)[0] == A_ASSOCIATE_RJ
    # its association thread is over (and the only slot free again) once the refusal is reported
    wait_for(lambda: recorder.of("refused"), 10, what="the stranger's refusal")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as wrong:  # a P-DATA-TF before any request
        wrong.sendall(b"\x04\x00\x00\x00\x00\x02\x00\x00")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as holder:  # takes the only association slot
        holder.sendall(associate_rq())
        assert read_pdu(holder)[0] == A_ASSOCIATE_AC
        with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
            second.sendall(associate_rq())
            assert read_pdu(second)[0] == A_ASSOCIATE_RJ
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:  # past ARTIM: closed
            assert silent.recv(16) == b""
    refused = wait_for(lambda: len(recorder.of("refused")) >= 4 and recorder.of("refused"), 30,
                       what="four refusals")
    assert sorted(r.refusal for r in refused if r.refusal) == sorted(
        [RefusalReason.CALLING_AE, RefusalReason.PROTOCOL, RefusalReason.ASSOCIATION_LIMIT, RefusalReason.TIMEOUT]
    ), recorder.events
    by_reason = {r.refusal: r for r in recorder.of("refused")}
    stranger_record = by_reason[RefusalReason.CALLING_AE]
    assert (stranger_record.calling_ae, stranger_record.called_ae) == ("STRANGER", "ONCOAGENT")
    assert "allowed_callers" in stranger_record.detail and not stranger_record.accepted
    assert by_reason[RefusalReason.TIMEOUT].calling_ae == "" and by_reason[RefusalReason.TIMEOUT].address == \
        "127.0.0.1"


def test_a_calling_ae_title_with_control_bytes_is_refused_with_the_title_escaped(
    scp: tuple[StorageSCP, Recorder]
) -> None:
    node, recorder = scp
    request = bytearray(associate_rq(calling="MODALITY"))
    request[26:42] = b"MOD\x1b[2J\nALITY\x00\xff\xfe "  # the calling AE title field (PS3.8 9.3.2)
    with socket.create_connection(("127.0.0.1", node.settings.port), timeout=10) as hostile:
        hostile.sendall(bytes(request))
        assert read_pdu(hostile)[0] == A_ASSOCIATE_RJ  # not decoded: refused on the title's bytes
    (refused,) = wait_for(lambda: recorder.of("refused"), 10, what="the refusal")
    assert refused.refusal is RefusalReason.CALLING_AE and refused.calling_ae == "" and refused.address == "127.0.0.1"
    assert "\\x1b[2J\\nALITY" in refused.detail and "\n" not in refused.detail  # escaped, one line
    assert recorder.of("accepted") == []
