"""No patient name or ID in the daemon's log, at DEBUG level with pynetdicom's loggers on: a generated MR series
with distinctive patient values is received over DICOM (dcmtk's storescu), routed, processed by mri-tumour,
reported (SR, SEG) and delivered to a PACS (a pynetdicom storage SCP); then the whole log is searched for the
name, each of its ^-separated parts, and the ID."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from agent.records import OutboxStatus
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.e2e.test_dicom_daemon import storescu
from tests.e2e.test_outbox_crash import Pacs, pacs  # noqa: F401 (the fixture)
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")

PATIENT_NAME = "Quastenbrink^Wilhelmina^Ottilie^Dr.^Jr"
PATIENT_ID = "QX-77345-PID"
OTHER_PATIENT_IDS = "ZB99118822"  # an alias: still the patient's identifier
SERIES = MRSeriesSpec(rows=48, columns=48, slices=12, pixel_spacing_mm=4.0, slice_thickness_mm=5.0, lesions=1,
                      seed=900_777)


def identifying_strings() -> list[str]:
    parts = [p for p in re.split(r"[\^ ]", PATIENT_NAME) if len(p) > 3]  # "Dr." and "Jr" are not identifying
    return [PATIENT_NAME, *parts, PATIENT_ID, OTHER_PATIENT_IDS]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_patient_names_and_ids_never_reach_the_log(tmp_path: Path, pacs: Pacs) -> None:  # noqa: F811
    series = write_mr_series(tmp_path / "gen", SERIES)
    for path in series.files:
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.OtherPatientIDs = OTHER_PATIENT_IDS
        ds.save_as(path)
    config: dict[str, Any] = {
        "log": {"level": "DEBUG"},
        "routing": {"rules": [{"name": "mri", "pipeline": "mri-tumour",
                               "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}, "min_slices": 3}}]},
        "pipelines": {"mri-tumour": {"torch_threads": 1}},
        "executor": {"workers": 1, "poll_interval_s": 0.1, "shutdown_grace_s": 1.0},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 0.5, "max_wait_s": 2.0},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
        "outbox": {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "scan_interval_s": 0.2},
    }
    daemon = DaemonProcess(tmp_path, config)
    daemon.start()
    try:
        sent = storescu(daemon, series.files)
        assert sent.returncode == 0, sent.stderr

        def delivered() -> bool:
            counts = daemon.counts()
            return counts["jobs"]["succeeded"] == 1 and counts["outbox"].get(OutboxStatus.SENT.value, 0) >= 2 \
                and set(counts["outbox"]) == {OutboxStatus.SENT.value}

        wait_for(delivered, 240, interval=0.3, what="the series processed and its findings delivered")
        assert sum(pacs.received.values()) >= 2
        # what PACS got does carry the patient (the findings must reach the right record): the values are real
        received = list(daemon.data_dir.glob("results/job-*/*.dcm"))
        assert received and str(pydicom.dcmread(received[0], stop_before_pixels=True).PatientID) == PATIENT_ID
    finally:
        daemon.stop()
    log = daemon.log()
    assert "DEBUG" in log and "pynetdicom" in log  # the chatty loggers were on
    found = {s for s in identifying_strings() if s.lower() in log.lower()}
    assert not found, f"patient data in the daemon's log ({daemon.log_path}): {sorted(found)}"
