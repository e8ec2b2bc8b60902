"""The query/retrieve SCU against Orthanc (a real PACS): C-FIND by date range and modality, C-MOVE to OncoAgent's
own SCP, C-GET into a folder, and the failures (unknown move destination, closed port, a silent peer)."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    VLWholeSlideMicroscopyImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt

from agent.store import Store
from dicom_node.errors import QueryRetrieveError
from dicom_node.query_retrieve import FIND, MOVE, StudyMatch, find_studies, get_study, move_study
from dicom_node.scp import StorageSCP
from dicom_node.settings import DestinationConfig, ScpConfig, TlsConfig
from dicom_node.transport import server_ssl_context
from tests.support.net import free_port
from tests.support.orthanc import Orthanc

SCP_AE = "ONCOAGENT"
SOP_CLASSES = {"MR": MRImageStorage, "CT": CTImageStorage, "SM": VLWholeSlideMicroscopyImageStorage}
TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Study:
    uid: str
    day: date
    sop_uids: tuple[str, ...]


def write_study(folder: Path, day: date, series: list[tuple[str, int]]) -> tuple[Study, list[Path]]:
    """A generated study dated ``day``: one series per (modality, instances), 8x8 pixels each."""
    study_uid = generate_uid()
    files, sop_uids = [], []
    for number, (modality, count) in enumerate(series, 1):
        series_uid = generate_uid()
        for index in range(count):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = SOP_CLASSES[modality]
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientName, ds.PatientID = "Synthetic^Study", f"SYN-{study_uid[-6:]}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.StudyDate = ds.SeriesDate = day.strftime("%Y%m%d")
            ds.StudyTime, ds.Modality = "120000", modality
            ds.SeriesNumber, ds.InstanceNumber = number, index + 1
            ds.Rows = ds.Columns = 8
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = np.full((8, 8), index, dtype=np.uint16).tobytes()
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            sop_uids.append(str(ds.SOPInstanceUID))
    return Study(study_uid, day, tuple(sop_uids)), files


@dataclass
class Pacs:
    orthanc: Orthanc
    dest: DestinationConfig
    storage: Path  # where OncoAgent's SCP stores what it receives
    studies: dict[str, Study]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    root = tmp_path_factory.mktemp("qr")
    store = Store.open(f"sqlite:///{root / 'scp.db'}")
    scp = StorageSCP(store, ScpConfig(port=free_port(), ae_title=SCP_AE, min_free_disk_mb=1), root / "storage")
    port = scp.start()
    orthanc = Orthanc(root / "orthanc", modalities={"oncoagent": (SCP_AE, "127.0.0.1", port)})
    orthanc.start()
    try:
        studies: dict[str, Study] = {}
        for name, day, series in [
            ("mr-jan10", date(2026, 1, 10), [("MR", 3)]),
            ("mr-jan20", date(2026, 1, 20), [("MR", 2)]),
            ("mr-feb05", date(2026, 2, 5), [("MR", 2)]),
            ("ct-jan15", date(2026, 1, 15), [("CT", 2)]),
            ("mr-ct-jan18", date(2026, 1, 18), [("MR", 1), ("CT", 2)]),
            ("sm-feb10", date(2026, 2, 10), [("SM", 3)]),  # a whole-slide series: three levels of a pyramid
        ]:
            study, files = write_study(root / "generated" / name, day, series)
            for path in files:
                orthanc.upload(path)
            studies[name] = study
        dest = DestinationConfig(name="pacs", ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)
        yield Pacs(orthanc, dest, root / "storage", studies)
    finally:
        orthanc.discard()
        scp.stop()
        store.close()


def names(pacs: Pacs, uids: list[str]) -> set[str]:
    by_uid = {study.uid: name for name, study in pacs.studies.items()}
    return {by_uid[uid] for uid in uids}


def test_find_by_date_range_finds_exactly_the_studies_in_it(pacs: Pacs) -> None:
    found = find_studies(pacs.dest, since=date(2026, 1, 12), until=date(2026, 1, 31), timeout_s=TIMEOUT_S,
                         calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in found]) == {"mr-jan20", "ct-jan15", "mr-ct-jan18"}
    assert [m.study_date for m in found] == [date(2026, 1, 15), date(2026, 1, 18), date(2026, 1, 20)]
    by_uid = {m.study_instance_uid: m for m in found}
    mixed = by_uid[pacs.studies["mr-ct-jan18"].uid]
    assert mixed.instances == 3 and set(mixed.modalities) == {"MR", "CT"}


def test_open_ended_date_ranges(pacs: Pacs) -> None:
    later = find_studies(pacs.dest, since=date(2026, 1, 19), until=None, timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in later]) == {"mr-jan20", "mr-feb05", "sm-feb10"}
    earlier = find_studies(pacs.dest, since=None, until=date(2026, 1, 10), timeout_s=TIMEOUT_S,
                           calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in earlier]) == {"mr-jan10"}
    assert len(find_studies(pacs.dest, since=None, until=None, timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)) == 6
    with pytest.raises(ValueError, match="empty"):
        find_studies(pacs.dest, since=date(2026, 2, 1), until=date(2026, 1, 31), timeout_s=TIMEOUT_S)


def test_modality_filter_one_and_several(pacs: Pacs) -> None:
    ct = find_studies(pacs.dest, since=None, until=None, modalities=["CT"], timeout_s=TIMEOUT_S,
                      calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in ct]) == {"ct-jan15", "mr-ct-jan18"}
    mr_in_january = find_studies(pacs.dest, since=date(2026, 1, 1), until=date(2026, 1, 31), modalities=["MR"],
                                 timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in mr_in_january]) == {"mr-jan10", "mr-jan20", "mr-ct-jan18"}
    both = find_studies(pacs.dest, since=date(2026, 1, 1), until=date(2026, 1, 31), modalities=["MR", "CT"],
                        timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    uids = [m.study_instance_uid for m in both]
    assert len(uids) == len(set(uids)) == 4  # the study with MR and CT, found twice, is one match
    assert names(pacs, uids) == {"mr-jan10", "mr-jan20", "ct-jan15", "mr-ct-jan18"}


def test_sop_class_filter(pacs: Pacs) -> None:
    ct = find_studies(pacs.dest, since=None, until=None, sop_classes=[CTImageStorage], timeout_s=TIMEOUT_S,
                      calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in ct]) == {"ct-jan15", "mr-ct-jan18"}
    assert all(CTImageStorage in m.sop_classes for m in ct)
    mr_in_ct_studies = find_studies(pacs.dest, since=None, until=None, modalities=["MR"], sop_classes=[CTImageStorage],
                                    timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    assert names(pacs, [m.study_instance_uid for m in mr_in_ct_studies]) == {"mr-ct-jan18"}


def test_whole_slide_studies_by_modality_and_sop_class(pacs: Pacs) -> None:
    slides = find_studies(pacs.dest, since=date(2026, 2, 1), until=date(2026, 2, 28), modalities=["SM"],
                          sop_classes=[VLWholeSlideMicroscopyImageStorage], timeout_s=TIMEOUT_S)
    assert [(m.study_instance_uid, m.modalities, m.instances) for m in slides] == [
        (pacs.studies["sm-feb10"].uid, ("SM",), 3)]


def stored_sop_uids(storage: Path, study_uid: str) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in (storage / study_uid).rglob("*.dcm")}


@pytest.mark.parametrize("name", ["mr-ct-jan18", "sm-feb10"])
def test_move_retrieves_every_instance_of_the_study_to_our_scp(pacs: Pacs, name: str) -> None:
    study = pacs.studies[name]
    outcome = move_study(pacs.dest, study.uid, SCP_AE, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.completed, outcome.failed, outcome.warning) == (0x0000, 3, 0, 0)
    assert outcome.study_instance_uid == study.uid
    assert stored_sop_uids(pacs.storage, study.uid) == set(study.sop_uids)  # on disk before C-STORE success
    assert stored_sop_uids(pacs.storage, pacs.studies["mr-jan10"].uid) == set()  # only the study asked for


def test_move_to_an_ae_the_pacs_does_not_know_fails_with_its_status(pacs: Pacs) -> None:
    study = pacs.studies["mr-jan20"]
    with pytest.raises(QueryRetrieveError) as caught:
        move_study(pacs.dest, study.uid, "NOBODY", timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    # Orthanc 1.10 answers 0xC000 (its log: "Unknown modality for AET: NOBODY"); PS3.4 and newer ones 0xA801
    assert caught.value.status in (0xA801, 0xC000)
    assert f"0x{caught.value.status:04X}" in str(caught.value) and study.uid in str(caught.value)
    assert not caught.value.transient
    assert stored_sop_uids(pacs.storage, study.uid) == set()


def test_get_writes_the_study_into_a_folder(pacs: Pacs, tmp_path: Path) -> None:
    study = pacs.studies["mr-jan10"]
    outcome = get_study(pacs.dest, study.uid, tmp_path / "got", timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE)
    assert (outcome.status, outcome.completed, outcome.failed) == (0x0000, 3, 0)
    assert sorted(p.name for p in outcome.stored) == sorted(f"{uid}.dcm" for uid in study.sop_uids)
    assert stored_sop_uids(tmp_path / "got", study.uid) == set(study.sop_uids)
    assert all(pydicom.dcmread(p).pixel_array.shape == (8, 8) for p in outcome.stored)
    assert not list((tmp_path / "got").rglob(".incoming-*"))


def test_get_of_a_class_we_did_not_offer_fails_with_the_pacs_status(pacs: Pacs, tmp_path: Path) -> None:
    study = pacs.studies["ct-jan15"]
    with pytest.raises(QueryRetrieveError, match=r"C-GET of study [\d.]+ failed with status") as caught:
        get_study(pacs.dest, study.uid, tmp_path / "got", timeout_s=TIMEOUT_S, calling_ae_title=SCP_AE,
                  sop_classes=[MRImageStorage])
    # Orthanc 1.10 stops at the first sub-operation it cannot send (no CT context) with 0xC000
    assert caught.value.status is not None and not caught.value.transient
    assert not (tmp_path / "got").exists()


def test_a_closed_port_fails_with_a_clear_error(tmp_path: Path) -> None:
    dead = DestinationConfig(name="dead", ae_title="NOBODY", host="127.0.0.1", port=free_port())
    with pytest.raises(QueryRetrieveError, match=r"dead \(NOBODY@127.0.0.1:\d+\) cannot be reached") as caught:
        find_studies(dead, since=None, until=None, timeout_s=2)
    assert caught.value.status is None and caught.value.transient
    with pytest.raises(QueryRetrieveError, match="cannot be reached"):
        move_study(dead, "1.2.3", SCP_AE, timeout_s=2)


def test_a_peer_that_never_answers_fails_at_the_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never says a word
        dest = DestinationConfig(name="silent", ae_title="SILENT", host="127.0.0.1", port=silent.getsockname()[1])
        with pytest.raises(QueryRetrieveError, match="did not answer within 1 s") as caught:
            find_studies(dest, since=None, until=None, timeout_s=1)
    assert caught.value.status is None and caught.value.transient


# ------------------------------------------------------------------------------- a scripted pynetdicom PACS


def identifier(**values: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


class ScriptedPacs:
    """A pynetdicom Query/Retrieve SCP that answers every C-FIND with ``answers`` and knows no move
    destination (pynetdicom answers 0xA801 for it)."""

    def __init__(self, answers: Sequence[tuple[int, Dataset | None]] = (), models: Sequence[str] = (FIND, MOVE),
                 only_caller: str | None = None, tls: TlsConfig | None = None) -> None:
        self.answers = list(answers)
        self.queries: list[Dataset] = []
        self.ae = AE(ae_title="SCRIPTED")
        for model in models:
            self.ae.add_supported_context(model)
        if only_caller is not None:
            self.ae.require_calling_aet = [only_caller]
        self.port = free_port()
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, ssl_context=server_ssl_context(tls) if tls else None,
            evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move)])

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        yield from self.answers

    def _move(self, event: evt.Event) -> Iterator[tuple[None, None]]:
        yield None, None

    def dest(self) -> DestinationConfig:
        return DestinationConfig(name="scripted", ae_title="SCRIPTED", host="127.0.0.1", port=self.port)

    def __enter__(self) -> ScriptedPacs:
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the bad UID is the point
def test_odd_find_answers_are_dropped_and_the_good_ones_kept() -> None:
    good, other = generate_uid(), generate_uid()
    answers = [
        (0xFF00, identifier()),  # no StudyInstanceUID
        (0xFF00, identifier(StudyInstanceUID="not-a-uid")),
        (0xFF00, identifier(StudyInstanceUID=good, StudyDate="20260230", ModalitiesInStudy=["MR", "SR"],
                            NumberOfStudyRelatedInstances="")),
        (0xFF01, identifier(StudyInstanceUID=other, StudyDate="20260110", ModalitiesInStudy="CT")),  # not MR
        (0xFF00, identifier(StudyInstanceUID=good, StudyDate="20260110")),  # the same study again
        (0xFF00, identifier(StudyInstanceUID=generate_uid(), SOPClassesInStudy=CTImageStorage)),  # not a wanted class
    ]
    with ScriptedPacs(answers) as peer:
        found = find_studies(peer.dest(), since=date(2026, 1, 1), until=None, modalities=["mr"],
                             sop_classes=[MRImageStorage], timeout_s=TIMEOUT_S)
        (query,) = peer.queries
    assert found == [StudyMatch(good, date(2026, 1, 10), ("MR", "SR"), (), None)]  # no SOPClassesInStudy: kept
    assert (query.StudyDate, query.ModalitiesInStudy, query.QueryRetrieveLevel) == ("20260101-", "MR", "STUDY")
    assert "PatientName" not in query and "PatientID" not in query


@pytest.mark.parametrize(("status", "transient"), [(0xA700, True), (0xA900, False), (0xC001, False)])
def test_a_find_failure_status_is_an_error_with_that_status(status: int, transient: bool) -> None:
    answers = [(0xFF00, identifier(StudyInstanceUID=generate_uid())), (status, None)]
    with ScriptedPacs(answers) as peer, pytest.raises(QueryRetrieveError, match=f"0x{status:04X}") as caught:
        find_studies(peer.dest(), since=None, until=None, timeout_s=TIMEOUT_S)
    assert caught.value.status == status and caught.value.transient is transient


def test_a_move_destination_the_pacs_does_not_know_is_0xA801() -> None:
    with ScriptedPacs() as peer, pytest.raises(QueryRetrieveError, match="Move destination unknown") as caught:
        move_study(peer.dest(), generate_uid(), "NOBODY", timeout_s=TIMEOUT_S)
    assert caught.value.status == 0xA801


def test_a_rejected_association_and_a_missing_model_are_clear_errors() -> None:
    with ScriptedPacs(only_caller="SOMEONE") as peer, pytest.raises(QueryRetrieveError, match="rejected the assoc"):
        find_studies(peer.dest(), since=None, until=None, timeout_s=TIMEOUT_S)
    with ScriptedPacs(models=[FIND]) as peer, pytest.raises(QueryRetrieveError, match=r"does not support .* - MOVE"):
        move_study(peer.dest(), generate_uid(), SCP_AE, timeout_s=TIMEOUT_S)


def test_find_over_tls_and_not_in_the_clear(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pacs-test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    study = generate_uid()
    tls = TlsConfig(enabled=True, certificate=cert, private_key=key, ca_certificates=cert)
    with ScriptedPacs([(0xFF00, identifier(StudyInstanceUID=study))], tls=tls) as peer:
        secure = dataclasses.replace(peer.dest(), tls=tls)
        assert [m.study_instance_uid for m in find_studies(secure, since=None, until=None, timeout_s=TIMEOUT_S)] \
            == [study]
        with pytest.raises(QueryRetrieveError) as caught:
            find_studies(peer.dest(), since=None, until=None, timeout_s=2)
        assert caught.value.status is None
