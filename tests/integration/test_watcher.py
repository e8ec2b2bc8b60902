"""Folder intake against real files: settle detection, DICOM storage, quarantine, restarts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom

from agent.config import Settings
from agent.dispatch import Dispatcher
from agent.records import InputKind, InputState, JobStatus
from agent.store import Store
from agent.watcher import FolderWatcher
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import SCRIPTED_RULES, shared


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
    settings = make_settings(ingest={"quiet_seconds": 30})
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
