"""A PACS batch source with ``retrieve: get`` (issue 11: "or C-GET where configured"): the run finds Orthanc's
recent studies by C-FIND and fetches each by C-GET on its own association, no SCP of ours involved; the files are
taken in as an inbox's (stored, recorded, the copies removed) and the study's series queued."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pydicom

from agent.batch import HeldRun, run_held
from agent.config import Settings
from agent.records import BatchRunStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.support.orthanc import Orthanc

SPEC = MRSeriesSpec(slices=4, rows=16, columns=16)
INSPECT = {"rules": [{"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}}]}


def upload(orthanc: Orthanc, files: list[Path], day: date) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyDate = day.strftime("%Y%m%d")
        ds.save_as(path)
        orthanc.upload(path)


def test_a_pacs_source_with_c_get_takes_the_recent_studies_in_and_queues_them(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"oncoagent": ("ONCOAGENT", "127.0.0.1", 11112)})
    orthanc.start()
    try:
        recent = write_mr_series(tmp_path / "gen" / "recent", MRSeriesSpec(**{**SPEC.__dict__, "seed": 41}))
        old = write_mr_series(tmp_path / "gen" / "old", MRSeriesSpec(**{**SPEC.__dict__, "seed": 42}))
        upload(orthanc, recent.files, date.today())
        upload(orthanc, old.files, date.today() - timedelta(days=10))
        settings = make_settings(
            routing=INSPECT, scp={"enabled": False, "ae_title": "ONCOAGENT"},
            destinations=[{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                           "port": orthanc.dicom_port}],
        )
        store = Store.open(settings.database_url)
        try:
            now = time.time()
            options = {"pacs": {"destination": "pacs", "days": 3, "modalities": ["MR"], "retrieve": "get",
                                "timeout_s": 60}}
            run = store.batch_run_begin("pacs", now, [], False, owner="n", lease_s=60, now=now, options=options)
            assert run is not None
            report = run_held(store, settings, HeldRun(store, run, "n", 60))
            assert store.get_batch_run(run.id).status is BatchRunStatus.DONE
            assert report.inputs == 1 and len(report.queued) == 1
            inp = store.find_input(recent.series_uid)
            assert inp is not None and inp.instance_count == len(recent.files)
            assert store.find_input(old.series_uid) is None  # outside the window: never fetched
            assert sorted(p.name for p in store.instance_paths(inp.id)) == sorted(
                f"{pydicom.dcmread(f).SOPInstanceUID}.dcm" for f in recent.files)
            assert [p.name for p in settings.paths.tmp.iterdir()] == []  # the fetched copies are gone

            again = store.batch_run_begin("pacs", now + 60, [], False, owner="n", lease_s=60, now=now + 60,
                                          options=options)
            assert again is not None
            second = run_held(store, settings, HeldRun(store, again, "n", 60))
            assert second.inputs == 1 and second.queued == []  # known content: not queued twice
            assert store.counts()["instances"] == len(recent.files)
        finally:
            store.close()
    finally:
        orthanc.discard()
