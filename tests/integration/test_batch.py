"""Batches over archives (agent.batch.enqueue_paths, behind ``oncoagent batch`` and the nightly schedules): files
are read in place, an instance already stored with the same dataset is not copied again, and the archive is
never changed."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom

from agent.batch import enqueue_paths
from agent.config import Settings
from agent.ingest.dicom_files import same_dataset
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series

SPEC = MRSeriesSpec(slices=6, rows=16, columns=16)


def digests(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def stored_files(store: Store, series_uid: str) -> dict[Path, tuple[int, int]]:
    inp = store.find_input(series_uid)
    assert inp is not None
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in store.instance_paths(inp.id)}


def test_a_second_batch_over_an_archive_copies_nothing_and_changes_nothing(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    archive = tmp_path / "archive" / "2026-11"
    series = write_mr_series(archive, SPEC)
    before = digests(archive)
    store = Store.open(settings.database_url)
    try:
        first = enqueue_paths(store, settings, [archive.parent])
        assert first.files == len(series.files) and first.inputs == 1
        stored = stored_files(store, series.series_uid)
        assert len(stored) == len(series.files)

        second = enqueue_paths(store, settings, [archive.parent], reprocess=True)
        assert second.inputs == 1
        assert stored_files(store, series.series_uid) == stored  # same files: not rewritten, not replaced
        assert digests(archive) == before  # the archive is read in place, never changed
        assert store.counts()["instances"] == len(series.files)
    finally:
        store.close()


def test_an_archive_file_whose_dataset_changed_is_stored_again_and_its_series_is_new_content(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(routing={"rules": [{"name": "any", "pipeline": "inspect",
                                                 "match": {"kind": "dicom-series"}}]})
    archive = tmp_path / "archive"
    series = write_mr_series(archive, SPEC)
    store = Store.open(settings.database_url)
    try:
        first = enqueue_paths(store, settings, [archive])
        fingerprint = store.find_input(series.series_uid).fingerprint  # type: ignore[union-attr]
        stored = stored_files(store, series.series_uid)
        changed = series.files[2]
        ds = pydicom.dcmread(changed)
        ds.SeriesDescription = "AX T2 CORRECTED"
        ds.save_as(changed, enforce_file_format=True)

        third = enqueue_paths(store, settings, [archive])
        now = stored_files(store, series.series_uid)
        target = next(p for p in now if p.name == f"{ds.SOPInstanceUID}.dcm")
        assert now[target] != stored[target]  # written again
        assert pydicom.dcmread(target).SeriesDescription == "AX T2 CORRECTED"
        assert all(now[p] == stored[p] for p in now if p != target)  # the others were not
        assert store.find_input(series.series_uid).fingerprint != fingerprint  # type: ignore[union-attr]
        assert third.queued and third.queued != first.queued  # new content: a job of its own, reprocess or not
        assert store.counts()["instances"] == len(series.files)
    finally:
        store.close()


def test_the_same_dataset_under_another_file_meta_is_the_same_instance(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "gen", SPEC)
    original = series.files[0]
    ds = pydicom.dcmread(original)
    ds.file_meta.SourceApplicationEntityTitle = "SCANNER_7"  # longer file meta, same dataset
    other = tmp_path / "other.dcm"
    ds.save_as(other, enforce_file_format=True)
    assert other.read_bytes() != original.read_bytes()
    assert same_dataset(original, other)
    copy = tmp_path / "copy.dcm"
    shutil.copy(original, copy)
    ds.PatientWeight = 71
    ds.save_as(copy, enforce_file_format=True)
    assert not same_dataset(original, copy)
