"""Site-validation records: written whole, keyed by the weights' hash, and the mark while any model lacks one."""

from __future__ import annotations

from pathlib import Path

from pipelines.base import ModelRef
from pipelines.models.registry import resolve
from pipelines.models.site_validation import (
    SiteValidation,
    all_records,
    read_record,
    record_path,
    validation_mark,
    write_record,
)

SEG = ModelRef("mri-lesion-unet", "1.0.0", "a" * 64)
CLF = ModelRef("mri-lesion-svm", "1.0.0", "b" * 64)


def _record(ref: ModelRef) -> SiteValidation:
    return SiteValidation(model=ref.name, version=ref.version, sha256=ref.sha256, accepted_by="dr-a",
                          accepted_at="2026-12-07T22:00:00Z", report="evaluation/report.html", cases=31,
                          metrics={"mean_dice": 0.81})


def test_mark_names_every_unvalidated_model_until_all_are_accepted(tmp_path: Path) -> None:
    mark = validation_mark(tmp_path, [SEG, CLF], generated=True)
    assert mark is not None and mark.startswith("model not validated at this site; trained on generated data")
    assert "mri-lesion-unet 1.0.0" in mark and "mri-lesion-svm 1.0.0" in mark
    write_record(tmp_path, _record(SEG))
    mark = validation_mark(tmp_path, [SEG, CLF])
    assert mark is not None and "mri-lesion-unet" not in mark and "mri-lesion-svm" in mark
    write_record(tmp_path, _record(CLF))
    assert validation_mark(tmp_path, [SEG, CLF]) is None
    assert {r.model for r in all_records(tmp_path)} == {SEG.name, CLF.name}


def test_a_record_is_for_the_weights_not_the_version(tmp_path: Path) -> None:
    write_record(tmp_path, _record(SEG))
    retrained = ModelRef(SEG.name, SEG.version, "c" * 64)
    assert read_record(tmp_path, retrained.name, retrained.sha256) is None
    assert validation_mark(tmp_path, [retrained]) is not None
    assert read_record(tmp_path, SEG.name, SEG.sha256) == _record(SEG)


def test_a_damaged_record_counts_as_absent(tmp_path: Path) -> None:
    path = write_record(tmp_path, _record(SEG))
    assert path == record_path(tmp_path, SEG.name, SEG.sha256)
    path.write_text("{not json", encoding="utf-8")
    assert read_record(tmp_path, SEG.name, SEG.sha256) is None
    assert all_records(tmp_path) == []
    assert not list(path.parent.glob(".*.tmp"))


def test_generated_data_is_said_of_shipped_weights_only(tmp_path: Path) -> None:
    shipped = resolve("mri-lesion-unet")
    mark = validation_mark(tmp_path, [shipped.ref])
    assert mark == f"model not validated at this site; trained on generated data (mri-lesion-unet {shipped.version})"
    retrained = ModelRef(shipped.name, shipped.version, "d" * 64)  # a lab's own weights under the same name
    assert validation_mark(tmp_path, [retrained]) == (
        f"model not validated at this site (mri-lesion-unet {shipped.version})")
