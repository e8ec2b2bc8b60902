"""The outbox sender against Orthanc (a real PACS) and against pynetdicom peers that refuse or fail."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE, evt

from agent.config import Destination
from agent.dicom_wiring import NamedOutbox
from agent.errors import StoreError
from agent.job_outcomes import deliveries_for
from agent.records import Delivery, InputKind, OutboxStatus
from agent.store import Store
from dicom_node.scp import StorageSCP
from dicom_node.scu import OutboxSender
from dicom_node.settings import DestinationConfig, OutboxConfig, ScpConfig
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import shared
from tests.support.net import free_port
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for

FAST = OutboxConfig(backoff_base_s=0.2, backoff_max_s=0.5, max_attempts=4, timeout_s=5, scan_interval_s=0.2)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'out.db'}")
    yield s
    s.close()


def queue(store: Store, destination: str, files: list[Path]) -> list[int]:
    ids = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        item, _ = store.outbox_add(destination, path, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        ids.append(item.id)
    return ids


class PeerScp:
    """A pynetdicom storage SCP that only supports MR Image Storage and answers a chosen status."""

    def __init__(self, status: int = 0x0000) -> None:
        self.status = status
        self.received: list[str] = []
        self.ae = AE(ae_title="PEER")
        self.ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.port = free_port()
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        if self.status == 0:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def destination(self) -> DestinationConfig:
        return DestinationConfig(name="peer", ae_title="PEER", host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        self.server.shutdown()


def test_sop_class_refused_at_negotiation_is_failed_once_with_the_reason(store: Store, tmp_path: Path) -> None:
    peer = PeerScp()
    try:
        mr = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=2, rows=16, columns=16)).files
        sm = [shared("wsi/highdicom_sm_image.dcm")]
        mr_ids = queue(store, "peer", mr)
        (sm_id,) = queue(store, "peer", sm)
        sender = OutboxSender(store, [peer.destination()], FAST, "ONCOAGENT")
        report = sender.send_due()
        assert (report.sent, report.failed) == (2, 1)
        assert sorted(peer.received) == sorted(pydicom.dcmread(p).SOPInstanceUID for p in mr)
        refused = next(i for i in store.outbox_list() if i.id == sm_id)
        assert refused.status is OutboxStatus.FAILED
        assert "refused SOP class 1.2.840.10008.5.1.4.1.1.77.1.6" in refused.last_error
        assert all(i.status is OutboxStatus.SENT for i in store.outbox_list() if i.id in mr_ids)
        assert sender.send_due().sent == 0  # nothing is retried for ever
    finally:
        peer.stop()


@pytest.mark.parametrize(("status", "expected"), [(0xA700, OutboxStatus.PENDING), (0xC000, OutboxStatus.FAILED)])
def test_failure_statuses(store: Store, tmp_path: Path, status: int, expected: OutboxStatus) -> None:
    peer = PeerScp(status)
    try:
        queue(store, "peer", write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=1)).files)
        OutboxSender(store, [peer.destination()], FAST, "ONCOAGENT").send_due()
        (item,) = store.outbox_list()
        assert item.status is expected and item.last_status == status and item.attempts == 1
        if expected is OutboxStatus.PENDING:
            assert item.next_attempt_at > time.time()
    finally:
        peer.stop()


def test_unreachable_destination_backs_off_and_gives_up(store: Store, tmp_path: Path) -> None:
    dead = DestinationConfig(name="dead", ae_title="NOBODY", host="127.0.0.1", port=free_port())
    queue(store, "dead", write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=1)).files)
    sender = OutboxSender(store, [dead], dataclasses.replace(FAST, max_attempts=2), "ONCOAGENT")
    sender.send_due()
    (item,) = store.outbox_list()
    assert item.status is OutboxStatus.PENDING and "no association" in item.last_error
    assert sender.send_due().retry == 0  # not due yet
    wait_for(store.outbox_due, 5, what="the backoff to pass")
    sender.send_due()
    (item,) = store.outbox_list()
    assert item.status is OutboxStatus.FAILED and item.attempts == 2


def test_outbox_delivers_to_orthanc_exactly_once_after_it_comes_back(store: Store, tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    destination = DestinationConfig(name="pacs", ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=5, rows=32, columns=32, seed=7))
    queue(store, "pacs", series.files)
    sender = OutboxSender(store, [destination], dataclasses.replace(FAST, max_attempts=50), "ONCOAGENT")
    # Orthanc is down: everything waits, nothing is lost
    sender.send_due()
    assert {i.status for i in store.outbox_list()} == {OutboxStatus.PENDING}
    orthanc.start()
    try:
        import threading

        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        wait_for(lambda: all(i.status is OutboxStatus.SENT for i in store.outbox_list()), 30, what="delivery")
        sender.stop()
        thread.join(timeout=10)
        # queueing the same objects again (a resend) does not duplicate them in the PACS
        assert queue(store, "pacs", series.files)
        assert OutboxSender(store, [destination], FAST, "ONCOAGENT").send_due().sent == 0
        uids = orthanc.sop_instance_uids()
        assert sorted(uids) == sorted(pydicom.dcmread(p).SOPInstanceUID for p in series.files)
        study = orthanc.get("/studies")
        assert len(study) == 1
    finally:
        orthanc.discard()


def test_orthanc_pushes_a_study_to_our_scp(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    scp = StorageSCP(store, ScpConfig(port=free_port(), min_free_disk_mb=1), tmp_path / "storage")
    port = scp.start()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"oncoagent": ("ONCOAGENT", "127.0.0.1", port)})
    orthanc.start()
    try:
        ids = [orthanc.upload(p) for p in sorted(shared("mri/philips_mr700_series").iterdir())]
        study_id = orthanc.get(f"/instances/{ids[0]}/study")["ID"]
        orthanc.post("/modalities/oncoagent/store", [study_id])
        assert store.counts()["instances"] == 7
        (inp,) = store.list_inputs()
        assert inp.instance_count == 7 and inp.attrs["Modality"] == "MR"
    finally:
        orthanc.discard()
        scp.stop()
        store.close()


def test_a_success_commits_its_outbox_entries_with_it(store: Store, tmp_path: Path) -> None:
    result = tmp_path / "job-000001"
    series = write_mr_series(result, MRSeriesSpec(slices=2, rows=8, columns=8))
    outputs = [{"file": p.name, "sop_class_uid": str(pydicom.dcmread(p).SOPClassUID),
                "sop_instance_uid": str(pydicom.dcmread(p).SOPInstanceUID)} for p in series.files]
    pacs = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
    archive = Destination(name="archive", ae_title="ARCH", host="127.0.0.1", port=105, send_results=False)
    deliveries = deliveries_for([pacs, archive], result, outputs)
    assert {(d.destination, d.path) for d in deliveries} == {("pacs", p) for p in series.files}
    inp, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "a.svs", "f", {})
    store.enqueue(inp.id, "p", "1")
    job = store.claim()
    assert job is not None
    store.succeed(job.id, result, {}, [], deliveries)
    assert {(i.destination, i.job_id, i.path) for i in store.outbox_list()} == {("pacs", job.id, p)
                                                                                for p in series.files}
    # a retry of the same content (same UIDs, same files) adds nothing
    assert [store.outbox_add(d.destination, d.path, d.sop_class_uid, d.sop_instance_uid)[1]
            for d in deliveries] == [False, False]


def test_a_success_that_cannot_be_recorded_leaves_no_outbox_entry(store: Store, tmp_path: Path) -> None:
    inp, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "a.svs", "f", {})
    job, _ = store.enqueue(inp.id, "p", "1")  # queued, not running: success is refused
    delivery = Delivery("pacs", tmp_path / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.7")
    with pytest.raises(StoreError):
        store.succeed(job.id, tmp_path, {}, [], [delivery])
    assert store.outbox_list() == []


def _object(path: Path, sop_class: str, uid: str) -> Path:
    """A minimal object of a SOP class; the peers here negotiate on the class, they do not validate."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "2.25.1", "2.25.2", "SR"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    ("accepted", "expected_class"),
    [
        ([ComprehensiveSRStorage, EncapsulatedPDFStorage], ComprehensiveSRStorage),
        ([EncapsulatedPDFStorage], EncapsulatedPDFStorage),
    ],
)
def test_refused_3d_sr_falls_back_along_the_chain(
    store: Store, tmp_path: Path, accepted: list[str], expected_class: str
) -> None:
    result = tmp_path / "job-000001"
    primary = _object(result / "sr.dcm", Comprehensive3DSRStorage, "2.25.10")
    _object(result / "fallback" / "sr-comprehensive.dcm", ComprehensiveSRStorage, "2.25.11")
    _object(result / "fallback" / "report-pdf.dcm", EncapsulatedPDFStorage, "2.25.12")
    received: list[str] = []
    ae = AE(ae_title="PICKY")
    for sop_class in accepted:
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()

    def handle(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPClassUID))
        return 0

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        destination = DestinationConfig(name="picky", ae_title="PICKY", host="127.0.0.1", port=port)
        store.outbox_add(destination.name, primary, Comprehensive3DSRStorage, "2.25.10")
        sender = OutboxSender(store, [destination], FAST, "ONCOAGENT")
        for _ in range(3):
            sender.send_due()
        (item,) = store.outbox_list()
        assert item.status is OutboxStatus.SENT
        assert item.sop_class_uid == expected_class and received == [expected_class]
        assert item.path != primary
        assert "refused SOP class 1.2.840.10008.5.1.4.1.1.88.34" in (item.note or "")
        assert f"sending {item.path.name}" in (item.note or "")
    finally:
        server.shutdown()


def test_the_senders_of_two_daemons_on_one_store_send_each_object_once(tmp_path: Path) -> None:
    """Two daemons' senders run side by side on one store (each with its own connection, claiming under its
    daemon's name): every object reaches the peer once."""
    peer = PeerScp()
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [Store.open(url), Store.open(url, migrate=False)]
    files = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=40, rows=16, columns=16)).files
    queue(stores[0], "peer", files)
    senders = [OutboxSender(NamedOutbox(s, f"host-{n}", 600.0), [peer.destination()], FAST, f"SENDER{n}")
               for n, s in enumerate(stores)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: all(i.status is OutboxStatus.SENT for i in stores[0].outbox_list(limit=100)), 60,
                 what="every object to be sent")
        assert sorted(peer.received) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in files)  # once each
    finally:
        for sender in senders:
            sender.stop()
        for thread in threads:
            thread.join(timeout=10)
        for s in stores:
            s.close()
        peer.stop()
