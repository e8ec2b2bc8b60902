"""Folder intake against real files: settle detection, DICOM storage, quarantine, restarts."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pydicom

from agent.config import Settings
from agent.dispatch import Dispatcher
from agent.ingest import NETWORK_FILESYSTEMS, FolderWatcher, filesystem_type
from agent.records import InputKind, InputState, JobStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import SCRIPTED_RULES, shared
from tests.support.waiting import wait_for


def open_store(settings: Settings) -> Store:
    return Store.open(settings.database_url)


def test_inbox_dicom_is_stored_durably_and_removed_from_the_inbox(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=5, rows=16, columns=16))
    for f in series.files:
        shutil.copy(f, settings.paths.inbox / f.name)
    store = open_store(settings)
    assert FolderWatcher(store, settings).scan() == 5
    assert list(settings.paths.inbox.iterdir()) == []
    inp = store.find_input(series.series_uid)
    assert inp.kind is InputKind.DICOM_SERIES and inp.instance_count == 5
    assert inp.attrs["Modality"] == "MR" and "PatientName" not in inp.attrs
    stored = sorted(store.instance_paths(inp.id))
    assert all(p.is_relative_to(settings.paths.storage / series.study_uid / series.series_uid) for p in stored)
    assert pydicom.dcmread(stored[0]).SeriesInstanceUID == series.series_uid
    store.close()


def test_file_still_growing_is_not_taken_until_it_settles(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ingest={"settle_seconds": 10})
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    slide = settings.paths.inbox / "growing.svs"
    slide.write_bytes(b"part")
    assert watcher.scan(now=1000) == 0
    assert watcher.scan(now=1005) == 0
    slide.write_bytes(b"part and more")  # changed: the clock starts again
    assert watcher.scan(now=1011) == 0
    assert watcher.scan(now=1020) == 0
    assert watcher.scan(now=1021.5) == 1
    assert store.counts()["slides"] == 1
    store.close()


def test_unknown_and_broken_inbox_files_go_to_quarantine_with_a_reason(
    make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    (settings.paths.inbox / "notes.txt").write_text("hello")
    shutil.copy(shared("broken/pydicom_MR_truncated.dcm"), settings.paths.inbox / "trunc.dcm")
    store = open_store(settings)
    FolderWatcher(store, settings).scan()
    quarantined = sorted(p.name for p in settings.paths.quarantine.iterdir())
    assert "notes.txt" in quarantined and "notes.txt.reason.txt" in quarantined
    assert "neither DICOM nor a known slide format" in (settings.paths.quarantine / "notes.txt.reason.txt").read_text()
    assert list(settings.paths.inbox.iterdir()) == []
    # the truncated file still has a readable header: it is stored (the pipeline judges its pixels later)
    assert store.counts()["instances"] == 1
    assert not [q for q in quarantined if q.startswith("trunc")]
    store.close()


def test_dicom_without_meta_and_with_a_stray_leading_byte_is_quarantined(
    make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    shutil.copy(shared("broken/pydicom_no_meta.dcm"), settings.paths.inbox / "nometa")
    store = open_store(settings)
    FolderWatcher(store, settings).scan()
    assert store.counts()["instances"] == 0
    assert (settings.paths.quarantine / "nometa").exists()
    assert "nometa: neither DICOM" in (settings.paths.quarantine / "nometa.reason.txt").read_text()
    store.close()


def test_scanner_folder_slides_are_read_in_place_and_not_retaken_after_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    scans = tmp_path / "scanner"
    (scans / "run1").mkdir(parents=True)
    slide = scans / "run1" / "a.svs"
    shutil.copy(shared("wsi/openslide-python_small.svs"), slide)
    (scans / "run1" / "log.txt").write_text("scanner log")
    settings = make_settings(ingest={"folders": [str(scans)]}, routing={"rules": SCRIPTED_RULES})
    store = open_store(settings)
    FolderWatcher(store, settings).scan()
    Dispatcher(store, settings).route_ready()
    assert slide.exists() and (scans / "run1" / "log.txt").exists()  # nothing moved or deleted
    inp = store.find_input(str(slide.resolve()))
    assert inp.state is InputState.ROUTED
    assert len(store.jobs_for_input(inp.id)) == 1
    # a restart (new watcher, same store) does not queue the unchanged slide again
    FolderWatcher(store, settings).scan()
    Dispatcher(store, settings).route_ready()
    assert len(store.jobs_for_input(inp.id)) == 1
    # a rewritten slide is new content: a new job
    st = slide.stat()
    os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    FolderWatcher(store, settings).scan()
    Dispatcher(store, settings).route_ready()
    jobs = store.jobs_for_input(inp.id)
    assert len(jobs) == 2 and all(j.status is JobStatus.QUEUED for j in jobs)
    store.close()


def test_unmatched_input_is_recorded_as_ignored_with_the_reason(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    rules = [{"name": "only-ct", "pipeline": "inspect", "match": {"kind": "dicom-series", "dicom": {"Modality": "CT"}}}]
    settings = make_settings(routing={"rules": rules})
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=2, rows=8, columns=8))
    for f in series.files:
        shutil.copy(f, settings.paths.inbox / f.name)
    store = open_store(settings)
    FolderWatcher(store, settings).scan()
    assert Dispatcher(store, settings).route_ready() == []
    inp = store.find_input(series.series_uid)
    assert inp.state is InputState.IGNORED
    assert inp.reason == "no rule matched (only-ct: Modality is 'MR', rule wants CT)"
    store.close()


def test_series_waits_for_the_quiet_period(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    rules = [{"name": "mr", "pipeline": "inspect", "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}}}]
    settings = make_settings(ingest={"quiet_seconds": 30}, routing={"rules": rules})
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=3, rows=8, columns=8))
    for f in series.files:
        shutil.copy(f, settings.paths.inbox / f.name)
    store = open_store(settings)
    FolderWatcher(store, settings).scan()
    dispatcher = Dispatcher(store, settings)
    inp = store.find_input(series.series_uid)
    assert dispatcher.route_ready(now=inp.updated_at + 5) == []
    assert len(dispatcher.route_ready(now=inp.updated_at + 31)) == 1
    store.close()


# ------------------------------------------------------------------------------------------ slides: finished?


def _knobs(watcher: FolderWatcher, **changes: object) -> None:
    watcher.knobs = replace(watcher.knobs, **changes)


def test_a_truncated_slide_waits_then_is_taken_after_the_grace(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    scans = tmp_path / "scanner"
    scans.mkdir()
    settings = make_settings(ingest={"folders": [str(scans)], "inbox": False, "settle_seconds": 5})
    write_slide(tmp_path / "whole.tiff", SlideSpec(width=2048, height=2048, ctc=2, ctm=0, seed=1))
    data = (tmp_path / "whole.tiff").read_bytes()
    slide = scans / "half.tiff"
    slide.write_bytes(data[: len(data) // 2])  # a scanner still writing: TIFF header there, the rest not yet
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, unopenable_grace_s=60.0, watch_mode="polling")  # every scan walks: no event timing
    t = time.time()
    assert watcher.scan(now=t) == 0
    assert watcher.scan(now=t + 6) == 0  # settled, recognised as TIFF, but openslide cannot open it
    assert watcher.scan(now=t + 30) == 0
    assert watcher.scan(now=t + 66) == 1  # given up waiting: taken, so its job fails with the reason
    assert store.counts()["slides"] == 1
    # the scanner finishes writing: a new fingerprint, taken as soon as it has settled and opens
    slide.write_bytes(data)
    assert watcher.scan(now=t + 70) == 0
    assert watcher.scan(now=t + 76) == 1
    inp = store.find_input(str(slide.resolve()))
    assert inp is not None and inp.attrs["size"] == len(data)
    watcher.close()
    store.close()


def test_a_mirax_slide_waits_for_its_data_folder_and_moves_whole_from_the_inbox(
    make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    inbox = settings.paths.inbox
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, unopenable_grace_s=0.0)
    (inbox / "run7.mrxs").write_bytes(b"\xff\xd8 mirax index")
    assert watcher.scan() == 0  # Slidedat.ini not there
    data_dir = inbox / "run7"
    data_dir.mkdir()
    (data_dir / "Slidedat.ini").write_text(
        "[GENERAL]\nSLIDE_VERSION=01.02\n[DATAFILE]\nFILE_COUNT=2\nFILE_0=Data0000.dat\nFILE_1=Data0001.dat\n"
    )
    (data_dir / "Data0000.dat").write_bytes(b"d0")
    assert watcher.scan() == 0  # Data0001.dat still missing; nothing quarantined meanwhile
    assert list(settings.paths.quarantine.iterdir()) == []
    (data_dir / "Data0001.dat").write_bytes(b"d1")
    assert wait_for(lambda: watcher.scan() == 1, 10, what="the complete MIRAX slide")
    moved = settings.paths.storage / "slides" / "run7"
    assert sorted(p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()) == [
        "run7.mrxs", "run7/Data0000.dat", "run7/Data0001.dat", "run7/Slidedat.ini",
    ]
    assert not (inbox / "run7").exists() and not (inbox / "run7.mrxs").exists()
    inp = store.find_input(str((moved / "run7.mrxs").resolve()))
    assert inp is not None and inp.attrs["parts"] == 4
    watcher.close()
    store.close()


def test_a_vms_slide_waits_for_the_files_it_names(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    scans = tmp_path / "scanner"
    scans.mkdir()
    settings = make_settings(ingest={"folders": [str(scans)], "inbox": False})
    (scans / "h.vms").write_text(
        "[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=h.jpg\nImageFile(1,0)=h_1.jpg\nMapFile=h_map.jpg\n"
    )
    (scans / "h.jpg").write_bytes(b"\xff\xd8jpeg")
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, unopenable_grace_s=0.0)
    assert watcher.scan() == 0
    (scans / "h_1.jpg").write_bytes(b"\xff\xd8jpeg")
    (scans / "h_map.jpg").write_bytes(b"\xff\xd8jpeg")
    assert wait_for(lambda: watcher.scan() == 1, 10, what="the complete VMS slide")
    assert store.counts()["slides"] == 1  # the image files are parts, not inputs of their own
    watcher.close()
    store.close()


def test_context_from_filename_regex_and_sidecar(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    scans = tmp_path / "scanner"
    (scans / "ACC-77").mkdir(parents=True)
    settings = make_settings(ingest={"folders": [str(scans)], "inbox": False})
    shutil.copy(shared("wsi/openslide-python_small.svs"), scans / "ACC-77" / "P1234_slide2.svs")
    (scans / "ACC-77" / "P1234_slide2.svs.json").write_text(json.dumps({"stain": "PapGold", "bad key": 1, "n": [1]}))
    shutil.copy(shared("wsi/openslide-python_small.svs"), scans / "other.svs")
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, filename_regex=re.compile(r"(?P<accession>ACC-\d+)/P(?P<patient_id>\d+)_"))
    assert watcher.scan() == 2  # the sidecar is not an input of its own
    inp = store.find_input(str((scans / "ACC-77" / "P1234_slide2.svs").resolve()))
    assert inp is not None
    assert inp.attrs["context"] == {"accession": "ACC-77", "patient_id": "1234", "stain": "PapGold"}
    assert inp.attrs["context_source"] == "filename+sidecar"
    plain = store.find_input(str((scans / "other.svs").resolve()))
    assert plain is not None and "context" not in plain.attrs
    watcher.close()
    store.close()


def test_events_bring_new_files_between_full_walks(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    scans = tmp_path / "scanner"
    scans.mkdir()
    settings = make_settings(ingest={"folders": [str(scans)], "inbox": False})
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, watch_mode="events", rescan_interval_s=3600.0)
    assert watcher.scan() == 0  # the start-up walk; from now on only change events bring files
    shutil.copy(shared("wsi/openslide-python_small.svs"), scans / "new.svs")
    assert wait_for(lambda: watcher.scan() == 1, 10, what="the change event for new.svs")
    watcher.close()
    store.close()


def test_polling_mode_finds_files_without_events(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    scans = tmp_path / "share"
    scans.mkdir()
    settings = make_settings(ingest={"folders": [str(scans)], "inbox": False})
    store = open_store(settings)
    watcher = FolderWatcher(store, settings)
    _knobs(watcher, watch_mode="polling")
    assert watcher.scan() == 0
    shutil.copy(shared("wsi/openslide-python_small.svs"), scans / "n.svs")
    assert watcher.scan() == 1
    assert watcher._feed is None  # no observer was started
    store.close()


def test_filesystem_type_of_a_local_folder(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) not in NETWORK_FILESYSTEMS
