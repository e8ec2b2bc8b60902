"""Patient context attached on the admin page reaches the DICOM objects: a slide without context is analysed by a
real daemon and its results kept locally; an admin attaches the context through the web API; the daemon's
executor takes the queued job again by itself and this time makes the SR and the overview with that patient and
accession."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from agent.passwords import hash_password
from agent.review_records import Role
from agent.store import Store
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.e2e.test_unsent_results import CONFIG, _job
from tests.e2e.test_wsi_daemon import drop
from tests.integration.test_web_admin import signed_in
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

PASSWORD = "attach it"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path, CONFIG)
    yield d
    d.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_context_attached_on_the_web_makes_the_dicom_objects(daemon: DaemonProcess, tmp_path: Path) -> None:
    slide = tmp_path / "gen" / "scan-9.tiff"
    write_slide(slide, SlideSpec(width=1536, height=1536, ctc=4, ctm=1, seed=7311))
    daemon.start()
    drop(slide, daemon.data_dir / "inbox")
    job = wait_for(lambda: _job(daemon), 300, interval=0.3, what="the slide's job")
    assert job["status"] == "succeeded" and job["unsent_reason"].startswith("no patient context")
    store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}", migrate=False)
    try:
        store.add_user("root", Role.ADMIN, hash_password(PASSWORD), time.time())
    finally:
        store.close()

    with signed_in(f"http://127.0.0.1:{daemon.web_port}", "root", PASSWORD) as client:
        [waiting] = client.get("/api/admin/no-context").json()["slides"]
        assert waiting["job_id"] == job["id"] and waiting["waiting"]
        answer = client.post(f"/api/admin/inputs/{waiting['input_id']}/context",
                             json={"patient_id": "P-9", "accession_number": "ACC-9", "patient_name": "Doe^Jane"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["requeued"] == [job["id"]]

    again = wait_for(lambda: (j := _job(daemon)) is not None and j["unsent_reason"] is None and j, 300,
                     interval=0.3, what="the job run again with the context")
    assert again["id"] == job["id"] and again["status"] == "succeeded"
    result = Path(again["result_path"])
    doc = json.loads((result / "result.json").read_text())
    assert sorted(o["file"] for o in doc["dicom_outputs"]) == ["overview.dcm", "sr.dcm"]
    sr = pydicom.dcmread(result / "sr.dcm")
    assert (sr.PatientID, sr.AccessionNumber, str(sr.PatientName)) == ("P-9", "ACC-9", "Doe^Jane")
    assert daemon.status()["results_unsent"] == 0
