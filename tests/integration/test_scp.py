"""The C-STORE SCP against real peers: dcmtk's echoscu/storescu/dcmsend and pynetdicom clients."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE

from agent.errors import StoreError
from agent.store import Store
from dicom_node.records import Instance
from dicom_node.scp import StorageSCP
from dicom_node.settings import AllowedCaller, ScpConfig, TlsConfig
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import shared
from tests.support.net import free_port
from tests.support.pdus import (
    associate_rq,
    associate_rq_for,
    cancel_rq,
    command_set,
    p_data,
    read_pdu,
    response_status,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")


class RunningScp:
    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.storage = root / "storage"
        self.store = Store.open(f"sqlite:///{root / 'scp.db'}")
        self.settings = ScpConfig(port=free_port(), min_free_disk_mb=1, **settings)
        self.scp = StorageSCP(self.store, self.settings, self.storage)
        self.port = self.scp.start()

    def stop(self) -> None:
        self.scp.stop()
        self.store.close()

    def files(self) -> list[Path]:
        return sorted(p for p in self.storage.rglob("*") if p.is_file())

    def dcmtk(self, tool: str, *files: str | Path, options: tuple[str, ...] = (), aet: str = "STORESCU"
              ) -> subprocess.CompletedProcess[str]:
        """Run a dcmtk client: ``tool [options] host port [files]``."""
        return subprocess.run(
            [tool, "-aet", aet, "-aec", self.settings.ae_title, *options, "127.0.0.1", str(self.port),
             *map(str, files)],
            capture_output=True, text=True, timeout=120, check=False,
        )

    def pynetdicom_assoc(self, aet: str = "TESTSCU", contexts: list[tuple[str, list[str]]] | None = None) -> Any:
        ae = AE(ae_title=aet)
        for sop, syntaxes in contexts or [(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]:
            ae.add_requested_context(sop, syntaxes)
        return ae.associate("127.0.0.1", self.port, ae_title=self.settings.ae_title)


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[RunningScp]:
    running = RunningScp(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def make_scp(tmp_path: Path) -> Iterator[Callable[..., RunningScp]]:
    started: list[RunningScp] = []

    def make(**settings: Any) -> RunningScp:
        running = RunningScp(tmp_path / f"scp{len(started)}", **settings)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def test_echo(scp: RunningScp) -> None:
    proc = scp.dcmtk("echoscu")
    assert proc.returncode == 0, proc.stderr


def test_vendor_mr_series_is_stored_under_study_series_sop(scp: RunningScp) -> None:
    files = sorted(shared("mri/ge_dwi_series").iterdir())
    proc = scp.dcmtk("storescu", *files)
    assert proc.returncode == 0, proc.stderr
    stored = scp.files()
    assert len(stored) == 14
    first = pydicom.dcmread(files[0])
    expected = scp.storage / first.StudyInstanceUID / first.SeriesInstanceUID / f"{first.SOPInstanceUID}.dcm"
    assert expected in stored
    # the bytes are the peer's encoding: pixel data identical, no re-encoding
    assert pydicom.dcmread(expected).PixelData == first.PixelData
    counts = scp.store.counts()
    assert counts["instances"] == 14 and counts["series"] == 1
    assert not list(scp.storage.rglob(".incoming-*"))


def test_philips_series_and_multiframe_wsi(scp: RunningScp) -> None:
    assert scp.dcmtk("storescu", *sorted(shared("mri/philips_mr700_series").iterdir())).returncode == 0
    wsi = [shared("wsi/dicom-boxes/boxes_0.dcm"), shared("wsi/dicom-boxes/boxes_1.dcm"),
           shared("wsi/highdicom_sm_image.dcm")]
    proc = scp.dcmtk("dcmsend", *wsi, options=("-nh", "-nuc"))  # dcmsend proposes the WSI class and JPEG
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = scp.store.counts()
    assert counts["instances"] == 7 + 3
    sm_uid = pydicom.dcmread(wsi[2]).SOPInstanceUID
    stored_wsi = pydicom.dcmread(next(p for p in scp.files() if p.name.startswith(sm_uid)))
    assert int(stored_wsi.NumberOfFrames) == 25


@pytest.mark.parametrize(
    ("tool", "syntax", "client"),
    [
        (["dcmconv", "+td"], DeflatedExplicitVRLittleEndian, ("storescu", "-xd")),  # -xd proposes deflate
        # -dn: dcmsend sends the file as stored instead of decompressing it
        (["dcmcjpls", "--encode-lossless"], JPEGLSLossless, ("dcmsend", "-dn")),
        (["dcmcrle"], RLELossless, ("dcmsend", "-dn")),
        (None, JPEG2000Lossless, ("dcmsend", "-dn")),
    ],
)
def test_compressed_transfer_syntaxes_are_accepted_as_sent(
    scp: RunningScp, tmp_path: Path, tool: list[str] | None, syntax: str, client: tuple[str, ...]
) -> None:
    source = shared("mri/MR_small.dcm")
    target = tmp_path / "converted.dcm"
    if tool is None:
        ds = pydicom.dcmread(source)
        ds.compress(syntax)
        ds.save_as(target)
    else:
        subprocess.run([*tool, str(source), str(target)], check=True, capture_output=True)
    assert pydicom.dcmread(target).file_meta.TransferSyntaxUID == syntax
    proc = scp.dcmtk(client[0], target, options=client[1:])
    assert proc.returncode == 0, proc.stderr
    (stored,) = scp.files()
    assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == syntax


def test_several_associations_at_once(scp: RunningScp, tmp_path: Path) -> None:
    series = [write_mr_series(tmp_path / f"s{i}", MRSeriesSpec(slices=12, rows=32, columns=32, seed=50 + i))
              for i in range(4)]
    results: list[int] = []

    def send(files: list[Path]) -> None:
        results.append(scp.dcmtk("storescu", *files).returncode)

    threads = [threading.Thread(target=send, args=(s.files,)) for s in series]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [0, 0, 0, 0]
    counts = scp.store.counts()
    assert counts["instances"] == 48 and counts["series"] == 4
    for s in series:
        assert scp.store.find_input(s.series_uid).instance_count == 12


def test_duplicate_instance_is_idempotent(scp: RunningScp) -> None:
    source = str(shared("mri/MR_small.dcm"))
    assert scp.dcmtk("storescu", source).returncode == 0
    fingerprint = scp.store.find_input(pydicom.dcmread(source).SeriesInstanceUID).fingerprint
    [stored] = scp.files()
    inode = stored.stat().st_ino
    assert scp.dcmtk("storescu", source).returncode == 0
    assert scp.store.counts()["instances"] == 1
    assert scp.store.find_input(pydicom.dcmread(source).SeriesInstanceUID).fingerprint == fingerprint
    assert scp.files() == [stored] and stored.stat().st_ino == inode  # the stored copy is not replaced


def test_a_file_no_record_names_is_replaced_by_the_instance_sent_again(scp: RunningScp) -> None:
    """What a crash between writing an instance and recording it leaves (never acknowledged): the peer sends it
    again, and this time it is written whole and recorded."""
    source = shared("mri/MR_small.dcm")
    ds = pydicom.dcmread(source)
    leftover = scp.storage / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half an instance")
    assert scp.dcmtk("storescu", str(source)).returncode == 0
    assert scp.store.counts()["instances"] == 1
    assert scp.files() == [leftover]
    assert pydicom.dcmread(leftover).SOPInstanceUID == ds.SOPInstanceUID


def test_truncated_dataset_gets_cannot_understand_and_leaves_no_file(scp: RunningScp) -> None:
    assoc = scp.pynetdicom_assoc()
    assert assoc.is_established
    status = assoc.send_c_store(shared("broken/pydicom_MR_truncated.dcm"))  # raw bytes as stored, no check
    assoc.release()
    assert status.Status == 0xC210
    assert scp.files() == []
    assert scp.store.counts()["instances"] == 0
    assert scp.dcmtk("echoscu").returncode == 0  # still serving


def test_path_traversal_uid_is_refused(scp: RunningScp) -> None:
    ds = pydicom.dcmread(shared("mri/MR_small.dcm"))
    ds.StudyInstanceUID = "1.2.3/../../../../tmp/evil"
    assoc = scp.pynetdicom_assoc()
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xC211
    assert scp.files() == []
    assert not list(scp.root.parent.rglob("evil*"))


class RecordsThatFail:
    """The store as the SCP's collaborator, made to raise on recording while ``failure`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failure: Exception | None = None

    def has_instance(self, sop_instance_uid: str) -> bool:
        return self.store.has_instance(sop_instance_uid)

    def add_instances(self, instances: Sequence[Instance]) -> list[bool]:
        if self.failure is not None:
            raise self.failure
        return self.store.add_instances(instances)


@pytest.mark.parametrize("failure", [StoreError("database is locked"), RuntimeError("a defect in the store")])
def test_instance_that_cannot_be_recorded_gets_out_of_resources_and_leaves_no_file(
    tmp_path: Path, failure: Exception
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    records = RecordsThatFail(store)
    scp = StorageSCP(records, ScpConfig(port=free_port(), min_free_disk_mb=1), tmp_path / "storage")
    port = scp.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ds = pydicom.dcmread(shared("mri/MR_small.dcm"))
        records.failure = failure
        assoc = ae.associate("127.0.0.1", port, ae_title="ONCOAGENT")
        assert assoc.send_c_store(ds).Status == 0xA700
        assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
        records.failure = None  # the recorder survived: the next attempt is stored
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert store.counts()["instances"] == 1
    finally:
        scp.stop()
        store.close()


def test_aborted_association_does_not_stop_the_scp(scp: RunningScp) -> None:
    for _ in range(3):
        assoc = scp.pynetdicom_assoc()
        assert assoc.is_established
        assoc.abort()
    assert scp.dcmtk("storescu", str(shared("mri/MR_small.dcm"))).returncode == 0
    assert scp.store.counts()["instances"] == 1


def test_allow_list_refuses_unknown_callers_and_wrong_hosts(
    make_scp: Callable[..., RunningScp], caplog: pytest.LogCaptureFixture
) -> None:
    scp = make_scp(allowed_callers=(AllowedCaller("MODALITY1"), AllowedCaller("PACS", frozenset({"10.9.9.9"}))))
    assert scp.dcmtk("echoscu", aet="MODALITY1").returncode == 0
    refused = scp.dcmtk("echoscu", aet="INTRUDER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert scp.dcmtk("echoscu", aet="PACS").returncode != 0  # right title, wrong address
    assert "calling AE title 'INTRUDER' is not in scp.allowed_callers" in caplog.text
    assert "PACS may not call from 127.0.0.1" in caplog.text


def test_disk_watermark_refuses_new_associations(
    make_scp: Callable[..., RunningScp], caplog: pytest.LogCaptureFixture
) -> None:
    scp = make_scp()
    scp.scp.settings = dataclasses.replace(scp.settings, min_free_disk_mb=10**9)
    proc = scp.dcmtk("storescu", str(shared("mri/MR_small.dcm")))
    assert proc.returncode != 0
    assert scp.files() == []
    assert "scp.min_free_disk_mb" in caplog.text


def test_association_limit(make_scp: Callable[..., RunningScp]) -> None:
    scp = make_scp(max_associations=1)
    first = scp.pynetdicom_assoc()
    assert first.is_established
    # a raw requestor: pynetdicom's own sometimes reports a rejection that arrives with the close as an abort
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as second:
        second.sendall(associate_rq(called=scp.settings.ae_title))
        refusal = read_pdu(second)
    assert refusal[0] == 0x03 and refusal[7:10] == b"\x02\x03\x02"  # A-ASSOCIATE-RJ: transient, local limit
    first.release()
    # the server's thread for the first association ends just after the release is acknowledged
    wait_for(lambda: not scp.scp.active_associations(), 10, what="the first association's thread to end")
    third = scp.pynetdicom_assoc()
    assert third.is_established
    third.release()


def test_series_is_receiving_while_its_association_is_open(scp: RunningScp) -> None:
    ds = pydicom.dcmread(shared("mri/MR_small.dcm"))
    assoc = scp.pynetdicom_assoc()
    assert assoc.send_c_store(ds).Status == 0
    assert scp.scp.receiving_series() == {ds.SeriesInstanceUID}
    assoc.release()
    assert scp.scp.receiving_series() == set()


def test_tls(make_scp: Callable[..., RunningScp], tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=oncoagent-test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    scp = make_scp(tls=TlsConfig(enabled=True, certificate=cert, private_key=key))
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    context.check_hostname = False
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    # connections that never shake hands wait without a thread each and hold up nobody
    silent = [socket.create_connection(("127.0.0.1", scp.port), timeout=10) for _ in range(5)]
    wait_for(lambda: scp.scp.pending_connections() == 5, 10, what="five connections waiting for a handshake")
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ONCOAGENT", tls_args=(context, None))
    assert assoc.is_established
    for sock in silent:
        sock.close()
    assert assoc.send_c_store(pydicom.dcmread(shared("mri/MR_small.dcm"))).Status == 0
    assoc.release()
    assert scp.dcmtk("echoscu").returncode != 0  # plain DICOM is not accepted on the TLS port
    assert scp.store.counts()["instances"] == 1


# dicom_node/acceptor.py answers a protocol violation with an A-ABORT (PS3.8 9.3.8): PDU type 0x07, length 4,
# source 2 (the service provider), reason 0 (not specified); then it closes the connection.
PROVIDER_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n",  # not DICOM at all (and a length over the PDU limit)
    b"\x04\x00\x00\x00\x00\x0c\x00\x00\x00\x08\x01\x02abcdef",  # P-DATA before any association
    b"\x01\x00\x00\x00\x00\x04\x00\x01\x00\x00",  # an A-ASSOCIATE-RQ cut short
])
def test_protocol_violations_get_an_abort_and_the_scp_goes_on(scp: RunningScp, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as sock:
        sock.sendall(garbage)
        reply = b""
        # the SCP may close with some of our bytes unread, which resets the connection after its A-ABORT
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):  # until the SCP closes: it must, and within the socket timeout
                reply += chunk
    assert reply == PROVIDER_ABORT
    echo = scp.dcmtk("echoscu")
    assert echo.returncode == 0, echo.stdout + echo.stderr  # the SCP still answers C-ECHO


def test_a_restricted_sop_class_list_is_what_the_scp_accepts(make_scp: Callable[..., RunningScp]) -> None:
    scp = make_scp(sop_classes=(str(MRImageStorage),))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(GrayscaleSoftcopyPresentationStateStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.settings.ae_title)
    assert assoc.is_established
    try:
        assert {str(cx.abstract_syntax) for cx in assoc.accepted_contexts} == {str(MRImageStorage)}
        assert {str(cx.abstract_syntax) for cx in assoc.rejected_contexts} == {
            str(GrayscaleSoftcopyPresentationStateStorage)}
    finally:
        assoc.release()


# ------------------------------------------------------------------------------ the DIMSE message state machine
# Raw PDUs (tests/support/pdus.py): MR Image Storage on context 1, Verification on context 3, both explicit VR
# little endian. A dataset over scp.STREAM_THRESHOLD goes to a temporary file as it arrives.

MR_CX, ECHO_CX, JPEG_CX = 1, 3, 5
C_STORE, C_ECHO, C_FIND = 0x0001, 0x0030, 0x0020
COMMAND, LAST = 0x01, 0x02
FRAGMENT = 512 * 1024  # under the 1 MiB PDU the SCP advertises


def mr_dataset(rows: int = 1536) -> tuple[str, bytes]:
    """(SOP Instance UID, the dataset encoded explicit VR little endian without file meta) of an MR image of
    ``rows`` x ``rows`` 16-bit pixels: 4.5 MiB at the default size, over the streaming threshold."""
    from io import BytesIO

    import numpy as np
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(shared("mri/MR_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows = ds.Columns = rows
    ds.PixelData = np.random.default_rng(rows).integers(0, 4096, rows * rows, dtype=np.uint16).tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    return str(ds.SOPInstanceUID), raw[meta_end:]


def encapsulated_mr_dataset() -> tuple[str, bytes]:
    """(SOP Instance UID, dataset) of a 6 MiB MR instance whose pixel data is encapsulated (JPEG baseline
    framing of 8 frames of random bytes: never decoded by the SCP), without file meta."""
    from io import BytesIO

    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(shared("mri/MR_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.NumberOfFrames, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 8, 7
    del ds.PixelData
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue() + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # Pixel Data, undefined length
    raw += encapsulate([os.urandom(768 * 1024) for _ in range(8)]) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return str(ds.SOPInstanceUID), raw[144 + int.from_bytes(raw[140:144], "little") :]


def store_command(sop_uid: str, message_id: int = 1, context_id: int = MR_CX) -> bytes:
    return p_data((context_id, COMMAND | LAST, command_set(C_STORE, message_id, sop_class=str(MRImageStorage),
                                                      sop_instance=sop_uid, has_dataset=True)))


def dataset_pdus(data: bytes, *, last: bool = True, context_id: int = MR_CX) -> list[bytes]:
    chunks = [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)]
    return [p_data((context_id, LAST if last and i == len(chunks) - 1 else 0, chunk)) for i, chunk in enumerate(chunks)]


@contextlib.contextmanager
def raw_association(port: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(associate_rq_for([(MR_CX, str(MRImageStorage), str(ExplicitVRLittleEndian)),
                                       (ECHO_CX, "1.2.840.10008.1.1", str(ExplicitVRLittleEndian)),
                                       (JPEG_CX, str(MRImageStorage), str(JPEGBaseline8Bit))]))
        assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
        yield sock


def until_closed(sock: socket.socket) -> bytes:
    reply = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


def incoming(scp: RunningScp) -> list[Path]:
    return list(scp.storage.rglob(".incoming-*"))


def test_a_large_instance_is_streamed_to_disk_and_stored_intact(scp: RunningScp) -> None:
    sop_uid, data = mr_dataset()
    with raw_association(scp.port) as sock:
        sock.sendall(store_command(sop_uid))
        pdus = dataset_pdus(data)
        for pdu in pdus[:-1]:
            sock.sendall(pdu)
        wait_for(lambda: incoming(scp), 10, what="the dataset to be streamed to a temporary file")
        sock.sendall(pdus[-1])
        assert response_status(read_pdu(sock)) == (0x8001, 1, 0x0000)
        sock.sendall(store_command(sop_uid, 2) + b"".join(pdus))  # resent: acknowledged, no second copy
        assert response_status(read_pdu(sock)) == (0x8001, 2, 0x0000)
    (stored,) = scp.files()
    assert stored.name == f"{sop_uid}.dcm"
    raw = stored.read_bytes()
    assert raw[144 + int.from_bytes(raw[140:144], "little"):] == data  # file meta first, then the bytes as sent
    assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert scp.store.counts()["instances"] == 1


def test_a_large_dataset_that_keeps_arriving_earns_time_beyond_the_message_deadline(
    make_scp: Callable[..., RunningScp]
) -> None:
    """dimse_timeout_s bounds a whole message, but a dataset earns a second for every 64 KiB that arrives: a
    multi-GB slide on a slow link is not cut off, while a trickling peer gains nothing (test_scp_limits)."""
    scp = make_scp(dimse_timeout_s=1.0)
    sop_uid, data = mr_dataset()  # 4.5 MiB: ~70 s earned
    pdus = dataset_pdus(data)
    started = time.monotonic()
    with raw_association(scp.port) as sock:
        sock.sendall(store_command(sop_uid))
        for index, pdu in enumerate(pdus):  # spread over ~2.5 s, well past the 1 s message deadline
            sock.sendall(pdu)
            wait_for(lambda i=index: time.monotonic() - started >= 2.5 * (i + 1) / len(pdus), 10, interval=0.01,
                     what="the next fragment's turn")
        assert response_status(read_pdu(sock)) == (0x8001, 1, 0x0000)
    assert time.monotonic() - started > 2.0
    assert [p.name for p in scp.files()] == [f"{sop_uid}.dcm"]


def test_large_encapsulated_pixel_data_is_checked_for_its_delimiter_in_the_file(scp: RunningScp) -> None:
    sop_uid, data = encapsulated_mr_dataset()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # the sequence delimiter ends it
    with raw_association(scp.port) as sock:
        sock.sendall(store_command(sop_uid, 1, JPEG_CX) + b"".join(dataset_pdus(data[:-12], context_id=JPEG_CX)))
        assert response_status(read_pdu(sock)) == (0x8001, 1, 0xC210)  # cut short: no delimiter
        assert scp.files() == []
        sock.sendall(store_command(sop_uid, 2, JPEG_CX) + b"".join(dataset_pdus(data, context_id=JPEG_CX)))
        assert response_status(read_pdu(sock)) == (0x8001, 2, 0x0000)
    (stored,) = scp.files()
    assert stored.read_bytes().endswith(data)
    assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == JPEGBaseline8Bit


def test_a_truncated_large_instance_gets_cannot_understand_and_leaves_nothing(scp: RunningScp) -> None:
    sop_uid, data = mr_dataset()
    with raw_association(scp.port) as sock:
        sock.sendall(store_command(sop_uid) + b"".join(dataset_pdus(data[:-1000])))
        assert response_status(read_pdu(sock)) == (0x8001, 1, 0xC210)
    assert scp.files() == []
    assert scp.store.counts()["instances"] == 0


def test_a_large_instance_with_a_bad_uid_is_refused_and_leaves_nothing(scp: RunningScp) -> None:
    _, data = mr_dataset()
    with raw_association(scp.port) as sock:
        sock.sendall(store_command("1.2.3/../evil") + b"".join(dataset_pdus(data)))
        assert response_status(read_pdu(sock)) == (0x8001, 1, 0xC211)
        sock.sendall(store_command("1.2.3.4.5", 2) + b"".join(dataset_pdus(data)))  # not the dataset's UID
        assert response_status(read_pdu(sock)) == (0x8001, 2, 0xA900)
    assert scp.files() == []


@pytest.mark.parametrize("how", ["peer abort", "connection closed", "new command", "other context"])
def test_a_dataset_cut_off_mid_transfer_leaves_nothing_on_disk(scp: RunningScp, how: str) -> None:
    sop_uid, data = mr_dataset()
    with raw_association(scp.port) as sock:
        sock.sendall(store_command(sop_uid) + b"".join(dataset_pdus(data[: 5 * 2**20 - 4096], last=False)))
        wait_for(lambda: incoming(scp), 10, what="the dataset to be streamed to a temporary file")
        if how == "peer abort":
            sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        elif how == "new command":  # PS3.8: no new command before the dataset is whole: A-ABORT, nothing kept
            sock.sendall(store_command(sop_uid, 2))
            assert until_closed(sock) == PROVIDER_ABORT
        elif how == "other context":  # a dataset fragment on another context than its command's
            sock.sendall(dataset_pdus(data[-4096:], context_id=ECHO_CX)[0])
            assert until_closed(sock) == PROVIDER_ABORT
    wait_for(lambda: not incoming(scp), 10, what="the temporary file to be removed")
    assert scp.files() == []
    assert scp.store.counts()["instances"] == 0
    assert scp.dcmtk("echoscu").returncode == 0


def test_command_fragments_on_two_contexts_abort(scp: RunningScp) -> None:
    command = command_set(C_ECHO, 1)
    with raw_association(scp.port) as sock:
        sock.sendall(p_data((ECHO_CX, COMMAND, command[:10]), (MR_CX, COMMAND | LAST, command[10:])))
        assert until_closed(sock) == PROVIDER_ABORT


def test_c_cancel_has_no_response_and_unknown_commands_get_0211(scp: RunningScp) -> None:
    with raw_association(scp.port) as sock:
        sock.sendall(p_data((ECHO_CX, COMMAND | LAST, cancel_rq(1))))  # PS3.7 9.3.2.3: never answered
        sock.sendall(p_data((ECHO_CX, COMMAND | LAST, command_set(C_FIND, 2))))
        assert response_status(read_pdu(sock)) == (0x8020, 2, 0x0211)  # the first answer is the C-FIND's
        sock.sendall(p_data((ECHO_CX, COMMAND | LAST, command_set(C_FIND, 3, has_dataset=True))))
        sock.sendall(p_data((ECHO_CX, LAST, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")))  # read, dropped
        assert response_status(read_pdu(sock)) == (0x8020, 3, 0x0211)
        sock.sendall(p_data((ECHO_CX, COMMAND | LAST, command_set(C_ECHO, 4))))
        assert response_status(read_pdu(sock)) == (0x8030, 4, 0x0000)


class _FailingSink:
    """A sink that takes the dataset to disk like the real one, then fails unexpectedly (a defect)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def write(self, fragment: memoryview) -> None:
        self.sink.write(fragment)

    def finish(self) -> int:
        raise RuntimeError("a defect in the handler")

    def discard(self) -> None:
        self.sink.discard()


class _DefectiveScp(StorageSCP):
    def _handle_store(self, *args: Any) -> Any:
        return _FailingSink(super()._handle_store(*args))


def test_an_unexpected_handler_error_aborts_and_leaves_nothing(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    scp = _DefectiveScp(store, ScpConfig(port=free_port(), min_free_disk_mb=1), tmp_path / "storage")
    port = scp.start()
    try:
        sop_uid, data = mr_dataset()
        with raw_association(port) as sock:
            sock.sendall(store_command(sop_uid) + b"".join(dataset_pdus(data)))
            assert until_closed(sock) == PROVIDER_ABORT
        wait_for(lambda: not scp.active_associations(), 10, what="the association to end")
        assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
        assert store.counts()["instances"] == 0
    finally:
        scp.stop()
        store.close()


@pytest.mark.parametrize(("which", "title", "reason"), [
    ("calling", "MÖDALITY".encode("latin-1"), 0x03),  # not ASCII: pynetdicom would log a traceback per request
    ("calling", b"MOD\nFORGED LOG", 0x03),  # a control character could forge a log line
    ("called", b"ONCO\\AGENT", 0x07),  # backslash is not allowed in an AE title
])
def test_an_unreadable_ae_title_is_refused_in_one_log_line(
    scp: RunningScp, caplog: pytest.LogCaptureFixture, which: str, title: bytes, reason: int
) -> None:
    request = bytearray(associate_rq(called=scp.settings.ae_title))
    at = 26 if which == "calling" else 10  # PS3.8 9.3.2: called AE at bytes 11-26, calling AE at 27-42
    request[at:at + 16] = title.ljust(16, b" ")
    with caplog.at_level(logging.DEBUG), socket.create_connection(("127.0.0.1", scp.port), timeout=10) as sock:
        sock.sendall(bytes(request))
        refusal = read_pdu(sock)
    assert refusal[0] == 0x03 and refusal[7:10] == bytes((0x01, 0x01, reason))  # A-ASSOCIATE-RJ, permanent
    wait_for(lambda: f"{which} AE title" in caplog.text, 10, what="the refusal in the log")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "\nFORGED" not in caplog.text
    echo = scp.dcmtk("echoscu")
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_ae_titles_padded_with_nul_bytes_are_accepted(scp: RunningScp) -> None:
    request = bytearray(associate_rq(called=scp.settings.ae_title))
    request[26:42] = b"MODALITY".ljust(16, b"\x00")
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as sock:
        sock.sendall(bytes(request))
        assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
