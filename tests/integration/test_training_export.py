"""``oncoagent export training-data`` on real reviewed cases: two generated 1536² slides run through the real
wsi-ctc pipeline and a generated MR series through the real mri-tumour pipeline (taken in by the daemon's own
intake classes and run as the executor runs them: tests.support.pipeline_jobs, shared with test_signoff),
reviewed with agent.store.reviews (detections rejected, reclassed, confirmed, a cell added; a lesion rejected,
one reclassed) and signed off with the worklist's own corrected result. The export runs as a subprocess; its YOLO
set goes through ``oncoagent train detector`` and its case folders through ``oncoagent train segmenter`` (one
epoch / two steps); the classifier's CLI needs more lesions than two reviewed series hold, so its data-loading
entry point (read_case_folder, extract_table) reads them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from agent.config import Settings
from agent.records import Job
from agent.review_records import DecisionKind, Role
from agent.store import Store
from agent.store.cases import get_case
from agent.store.reviews import review_version
from agent.web.case_views import corrected_result
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import REPO
from tests.support.pipeline_jobs import run_job, take_mr_series, take_slide

MR_SPEC = MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8, slice_thickness_mm=4.0, lesions=2,
                       seed=31, labels=("malignant", "benign"))
SLIDES = (SlideSpec(width=1536, height=1536, ctc=6, ctm=1, seed=11, tissue_fraction=0.5),
          SlideSpec(width=1536, height=1536, ctc=5, ctm=1, seed=12, tissue_fraction=0.5))
OLD, RECENT = 1_793_000_000.0, 1_796_000_000.0  # 2026-10-26, 2026-11-30 (UTC)
ADDED_BOX = [1000.0, 1000.0, 1030.0, 1030.0]


@dataclass(frozen=True)
class Reviewed:
    settings: Settings
    store: Store
    slides: list[Job]
    mri: Job
    unsigned_seen: list[int]  # job ids signed_reviews returned while every review was still in review


def _detections(job: Job) -> list[dict[str, Any]]:
    assert job.result_path is not None
    return list(json.loads((job.result_path / "result.json").read_text())["summary"]["detections"])


def _sign(store: Store, job: Job, review_id: int, user_id: int, at: float) -> None:
    case = get_case(store.engine, job.id)
    assert case is not None
    store.sign_off(review_id, user_id, corrected_result(case, store.decisions(review_id)), None, at)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reviewed]:
    root = tmp_path_factory.mktemp("export")
    settings = Settings.model_validate({"data_dir": str(root / "data")})
    settings.paths.create()
    store = Store.open(settings.database_url)
    try:
        series = write_mr_series(root / "mr", MR_SPEC)
        mr_input = take_mr_series(store, settings, series.files, series.series_uid)
        slides = []
        for i, spec in enumerate(SLIDES):
            path = root / f"slide{i}" / "slide.tiff"
            path.parent.mkdir()
            write_slide(path, spec)
            slides.append(run_job(store, settings, take_slide(store, settings, path).id, "wsi-ctc"))
        mri = run_job(store, settings, mr_input.id, "mri-tumour")
        paula = store.add_user("paula", Role.PATHOLOGIST, None, OLD).id
        rita = store.add_user("rita", Role.RADIOLOGIST, None, OLD).id

        first, second = (store.start_review(job.id, paula, OLD) for job in slides)
        found = _detections(slides[0])
        assert len(found) >= 3, "the first slide should give three detections or more"
        version = "wsi-ctc-yolo11n@1.0.0"
        store.decide(first.id, "d:0", DecisionKind.REJECTED, None, None, version, paula, OLD)
        other = "CTM" if found[1]["class"] == "CTC" else "CTC"
        store.decide(first.id, "d:1", DecisionKind.CONFIRMED, other, None, version, paula, OLD)
        store.decide(first.id, "d:2", DecisionKind.CONFIRMED, str(found[2]["class"]), None, version, paula, OLD)
        store.decide(first.id, "a:1", DecisionKind.ADDED, "CTC", ADDED_BOX, version, paula, OLD)
        assert len(_detections(slides[1])) >= 1
        store.decide(second.id, "d:0", DecisionKind.REJECTED, None, None, version, paula, RECENT)

        lesions = json.loads((mri.result_path / "result.json").read_text())["summary"]["lesions"]  # type: ignore[operator]
        assert len(lesions) >= 2, "the generated series should give two lesions"
        mr_review = store.start_review(mri.id, rita, RECENT)
        flipped = "benign" if lesions[0]["label"] == "malignant" else "malignant"
        store.decide(mr_review.id, f"l:{lesions[0]['index']}", DecisionKind.CONFIRMED, flipped, None, "m", rita,
                     RECENT)
        store.decide(mr_review.id, f"l:{lesions[1]['index']}", DecisionKind.REJECTED, None, None, "m", rita, RECENT)
        unsigned_seen = [job.id for _, job in store.signed_reviews(None)]

        _sign(store, slides[0], first.id, paula, OLD + 60)
        _sign(store, slides[1], second.id, paula, RECENT + 60)
        _sign(store, mri, mr_review.id, rita, RECENT + 60)
        # the second slide reopened: its new version (everything rejected) is in review, not signed off
        reopened = store.reopen_review(slides[1].id, paula, RECENT + 120)
        for index in range(len(_detections(slides[1]))):
            store.decide(reopened.id, f"d:{index}", DecisionKind.REJECTED, None, None, version, paula, RECENT + 120)
        yield Reviewed(settings, store, slides, mri, unsigned_seen)
    finally:
        store.close()


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}, check=False,
                          timeout=600)


@pytest.fixture(scope="module")
def exported(reviewed: Reviewed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("training") / "all"
    proc = oncoagent("--data-dir", str(reviewed.settings.data_dir), "export", "training-data", "--since",
                     "2026-10-01", "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 slide review(s)" in proc.stdout and "1 MR review(s)" in proc.stdout
    return out


def _rows(label: Path) -> list[tuple[int, float, float, float, float]]:
    rows = []
    for line in label.read_text().splitlines():
        cls, cx, cy, w, h = line.split()
        rows.append((int(cls), float(cx), float(cy), float(w), float(h)))
    return rows


def test_only_signed_reviews_count(reviewed: Reviewed) -> None:
    assert reviewed.unsigned_seen == []


def test_labels_hold_the_kept_and_added_cells_with_their_corrected_class(reviewed: Reviewed,
                                                                          exported: Path) -> None:
    root = exported / "yolo"
    manifest = json.loads((root / "manifest.json").read_text())
    by_job = {case["job_id"]: case for case in manifest["cases"]}
    first, second = reviewed.slides
    assert set(by_job) == {first.id, second.id}
    assert by_job[first.id]["review_version"] == 1 and by_job[second.id]["review_version"] == 1  # not the reopened
    assert by_job[first.id]["reviewer"] == "paula"
    assert by_job[first.id]["model_version"] == "wsi-ctc-yolo11n@1.0.0"
    assert (by_job[first.id]["rejected"], by_job[first.id]["reclassed"], by_job[first.id]["confirmed"],
            by_job[first.id]["added"]) == (1, 1, 1, 1)
    tile_px, names = manifest["tile_px"], ["CTC", "CTM"]
    for job in (first, second):
        review = review_version(reviewed.store.engine, job.id, 1)  # the signed version (the second is reopened)
        assert review is not None and review.result is not None
        tiles = by_job[job.id]["tiles"]
        ratio = by_job[job.id]["mpp_um"] / 0.5  # level-0 px per tile px (generated slides are 0.5 µm/px)
        signed = review.result["detections"]  # what the sign-off made final: kept and added cells
        for cell in signed:  # each kept or added cell is labelled, with its class after the review
            assert set(_classes_at(root, tiles, cell["l0_box"], ratio, tile_px)) == {names.index(cell["class"])}
        labelled = sum(t["labels"] for t in tiles)
        assert labelled == sum(len(_rows(root / _label_of(t))) for t in tiles) >= len(signed)
    found = _detections(first)
    assert _classes_at(root, by_job[first.id]["tiles"], found[0]["l0_box"], ratio_of(by_job[first.id]), tile_px) \
        == [], "the rejected detection is in no label file"
    assert any(_inside(found[0]["l0_box"], t["l0_origin"], ratio_of(by_job[first.id]) * tile_px)
               for t in by_job[first.id]["tiles"]), "its tile is in the set (a hard negative)"
    reclassed = _classes_at(root, by_job[first.id]["tiles"], found[1]["l0_box"], ratio_of(by_job[first.id]), tile_px)
    assert reclassed and set(reclassed) == {1 - names.index(found[1]["class"])}
    added = _classes_at(root, by_job[first.id]["tiles"], ADDED_BOX, ratio_of(by_job[first.id]), tile_px)
    assert added and set(added) == {0}


def ratio_of(case: dict[str, Any]) -> float:
    return float(case["mpp_um"]) / 0.5


def _label_of(tile: dict[str, Any]) -> str:
    return str(tile["image"]).replace("images/", "labels/", 1).replace(".png", ".txt")


def _inside(box: list[float], origin: list[float], span: float) -> bool:
    return origin[0] <= box[0] and box[2] <= origin[0] + span and origin[1] <= box[1] and box[3] <= origin[1] + span


def _classes_at(root: Path, tiles: list[dict[str, Any]], box: list[float], ratio: float, tile_px: int) -> list[int]:
    """The classes labelled at the centre of ``box`` (level-0) in the tiles that hold it whole."""
    found = []
    for tile in tiles:
        origin = tile["l0_origin"]
        if not _inside(box, origin, ratio * tile_px):
            continue
        cx = ((box[0] + box[2]) / 2 - origin[0]) / ratio / tile_px
        cy = ((box[1] + box[3]) / 2 - origin[1]) / ratio / tile_px
        found += [r[0] for r in _rows(root / _label_of(tile)) if abs(r[1] - cx) < 0.01 and abs(r[2] - cy) < 0.01]
    return found


def test_coordinates_lie_in_tiles_and_the_split_is_by_slide(reviewed: Reviewed, exported: Path) -> None:
    root = exported / "yolo"
    doc = yaml.safe_load((root / "data.yaml").read_text())
    assert doc["names"] == {0: "CTC", 1: "CTM"} and doc["train"] == "images/train" and doc["val"] == "images/val"
    for label in root.glob("labels/*/*.txt"):
        for _, cx, cy, w, h in _rows(label):
            assert min(cx - w / 2, cy - h / 2) >= -1e-6 and max(cx + w / 2, cy + h / 2) <= 1 + 1e-6  # 6 decimals
            assert w > 0 and h > 0
    manifest = json.loads((root / "manifest.json").read_text())
    splits = {case["job_id"]: case["split"] for case in manifest["cases"]}
    assert sorted(splits.values()) == ["train", "val"]
    for case in manifest["cases"]:
        for tile in case["tiles"]:
            assert tile["image"].startswith(f"images/{case['split']}/") and (root / tile["image"]).is_file()
    images = {p.parent.name: p for p in root.glob("images/*/*.png")}
    assert set(images) == {"train", "val"}


def test_since_filters_by_sign_off_time_and_an_earlier_export_is_not_overwritten(reviewed: Reviewed,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "recent"
    proc = oncoagent("--data-dir", str(reviewed.settings.data_dir), "export", "training-data", "--since",
                     "2026-11-15", "--out", str(out), "--pipelines", "wsi-ctc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "yolo" / "manifest.json").read_text())
    assert [case["job_id"] for case in manifest["cases"]] == [reviewed.slides[1].id]
    assert not (out / "mri-cases").exists()
    again = oncoagent("--data-dir", str(reviewed.settings.data_dir), "export", "training-data", "--since",
                      "2026-11-15", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "exists: export into a new folder" in again.stderr


def test_mr_case_folder_has_the_corrected_mask_and_labels(reviewed: Reviewed, exported: Path) -> None:
    root = exported / "mri-cases"
    assert reviewed.mri.result_path is not None
    lesions = json.loads((reviewed.mri.result_path / "result.json").read_text())["summary"]["lesions"]
    kept, rejected = lesions[0], lesions[1]
    case = root / f"job{reviewed.mri.id:06d}-v1"
    image, mask = sitk.ReadImage(str(case / "image.nii.gz")), sitk.ReadImage(str(case / "mask.nii.gz"))
    assert image.GetSize() == mask.GetSize() == (128, 128, 24)
    ai = sitk.GetArrayFromImage(sitk.ReadImage(str(reviewed.mri.result_path / "lesions.nii.gz")))
    values = sitk.GetArrayFromImage(mask)
    assert not np.any(values == rejected["index"]) and np.any(ai == rejected["index"])
    assert np.array_equal(values == kept["index"], ai == kept["index"])
    with (root / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    flipped = "benign" if kept["label"] == "malignant" else "malignant"
    assert rows == [{"case": case.name, "lesion": str(kept["index"]), "label": flipped}]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["cases"][0]["reviewer"] == "rita" and manifest["totals"]["rejected"] == 1


def test_the_trainers_accept_the_export(exported: Path, tmp_path: Path) -> None:
    detector = oncoagent("--data-dir", str(tmp_path / "d"), "train", "detector", "--data", str(exported / "yolo"),
                         "--epochs", "1", "--batch", "4", "--imgsz", "128", "--mpp", "0.5",
                         "--dataloader-workers", "0", "--out", str(tmp_path / "det"), "--runs-dir",
                         str(tmp_path / "runs"), cwd=tmp_path)
    assert detector.returncode == 0, detector.stdout[-3000:] + detector.stderr[-3000:]
    assert (tmp_path / "det" / "weights.pt").stat().st_size > 1_000_000
    segmenter = oncoagent("--data-dir", str(tmp_path / "d"), "train", "segmenter", "--data",
                          str(exported / "mri-cases"), "--iterations", "2", "--batch-size", "1", "--channels", "4",
                          "8", "16", "16", "--mining-at", "--thresholds", "0.5", "--out", str(tmp_path / "seg"),
                          "--no-record", cwd=tmp_path)
    assert segmenter.returncode == 0, segmenter.stdout[-3000:] + segmenter.stderr[-3000:]
    assert (tmp_path / "seg" / "mri-lesion-unet.pt").is_file()

    from pipelines.mri.cases import read_case_folder
    from pipelines.mri.feature_table import extract_table
    from pipelines.mri.radiomics import DEFAULT_PARAMS, RadiomicsExtractor

    cases = read_case_folder(exported / "mri-cases")
    table = extract_table(cases, RadiomicsExtractor(DEFAULT_PARAMS))
    assert len(cases) == 1 and len(table) == 1
