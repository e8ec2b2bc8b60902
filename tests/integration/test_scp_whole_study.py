"""A whole study pushed with dcmtk: images with their presentation state and key object selection all stored.

A modality or PACS forwards a study as it is: besides the MR images there is a Grayscale Softcopy Presentation
State and a Key Object Selection. Every instance gets 0x0000, is on disk and recorded; what no routing rule
wants stays stored, its input ignored with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage, KeyObjectSelectionDocumentStorage, MRImageStorage

from agent.config import Settings
from agent.dispatch import Dispatcher
from agent.records import InputState
from agent.store import Store
from dicom_node.scp import StorageSCP
from dicom_node.settings import ScpConfig
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.support.net import free_port

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")

EQUIPMENT = {"manufacturer": "OncoAgent tests", "manufacturer_model_name": "whole-study",
             "software_versions": "1", "device_serial_number": "0"}


def study_files(folder: Path) -> list[Path]:
    """An MR series plus a GSPS and a KOS of its images, each in its own series of the same study."""
    series = write_mr_series(folder / "mr", MRSeriesSpec(slices=8, rows=16, columns=16, seed=31))
    images = [pydicom.dcmread(f) for f in series.files]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=images, series_instance_uid=hd.UID(), series_number=90, sop_instance_uid=hd.UID(),
        instance_number=1, content_label="WINDOW", **EQUIPMENT,
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=images,
        content=hd.ko.KeyObjectSelection(document_title=codes.DCM.OfInterest, referenced_objects=images[:2]),
        series_instance_uid=hd.UID(), series_number=91, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=EQUIPMENT["manufacturer"],
    )
    extra = []
    for name, ds in (("gsps.dcm", gsps), ("kos.dcm", kos)):
        ds.save_as(folder / name, enforce_file_format=True)
        extra.append(folder / name)
    return [*series.files, *extra]


@pytest.fixture
def scp_and_store(tmp_path: Path) -> Iterator[tuple[Store, int]]:
    """The SCP with its default settings, on a free port; the store it records into."""
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    scp = StorageSCP(store, ScpConfig(port=free_port(), min_free_disk_mb=1), tmp_path / "storage")
    port = scp.start()
    yield store, port
    scp.stop()
    store.close()


def test_whole_study_push_is_stored_and_what_no_rule_wants_is_ignored_with_a_reason(
    tmp_path: Path, scp_and_store: tuple[Store, int], make_settings: Callable[..., Settings],
) -> None:
    store, port = scp_and_store
    files = study_files(tmp_path / "study")
    # -R: propose only the SOP classes of these files (GSPS and KOS among them), as a PACS forwarding them would
    proc = subprocess.run(
        ["storescu", "-v", "-R", "-aet", "PACS", "-aec", "ONCOAGENT", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert len(re.findall(r"Received Store Response \(Success\)", output)) == len(files), output
    assert "Rejected" not in output and "No presentation context" not in output, output

    stored = {pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID: p for p in (tmp_path / "storage").rglob("*.dcm")}
    assert len(list((tmp_path / "storage").rglob("*.dcm"))) == len(files)
    assert set(stored) == {MRImageStorage, GrayscaleSoftcopyPresentationStateStorage, KeyObjectSelectionDocumentStorage}
    assert store.counts()["instances"] == len(files)
    for original in files[-2:]:
        ds = pydicom.dcmread(original)
        on_disk = tmp_path / "storage" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert on_disk.read_bytes().endswith(original.read_bytes()[-200:])  # the peer's encoding, kept as sent

    # the daemon's default rules (whole-slide images, MR series): the GSPS and the KOS stay stored, ignored
    dispatcher = Dispatcher(store, make_settings(routing=Settings().routing.model_dump()))
    dispatcher.route_ready(now=2**40)
    by_modality = {inp.attrs.get("Modality"): inp for inp in store.list_inputs()}
    assert set(by_modality) == {"MR", "PR", "KO"}
    assert by_modality["MR"].state is InputState.ROUTED
    for modality in ("PR", "KO"):
        inp = by_modality[modality]
        assert inp.state is InputState.IGNORED
        assert f"Modality is '{modality}', rule wants MR" in (inp.reason or "")
