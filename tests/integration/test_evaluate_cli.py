"""``oncoagent evaluate`` as a subprocess on small generated data: reports, their numbers, and --accept."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.models.registry import entry, sha256_of
from pipelines.models.site_validation import read_record
from pipelines.mri.cases import case_from_spec, write_case_folder
from pipelines.synthetic.mri_series import MRSeriesSpec
from pipelines.synthetic.slides import SlideSpec, truth_path, write_slide
from pipelines.wsi.dataset import CutSettings, cut_slide, write_data_yaml
from pipelines.wsi.qupath_import import to_feature_collection
from tests.conftest import REPO


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}, capture_output=True, text=True,
        check=False, timeout=600,
    )


def annotated_slides(folder: Path, count: int, seed: int, side: int = 1024) -> list[dict[str, int]]:
    """Generated slides with their truth exported as QuPath would (polygons), the generator's file removed."""
    counts = []
    for i in range(count):
        slide = folder / f"slide-{i}.tiff"
        truth = write_slide(slide, SlideSpec(width=side, height=side, ctc=8, ctm=1, seed=seed + i,
                                             mode="brightfield" if i % 2 == 0 else "fluorescence"))
        slide.with_suffix(".geojson").write_text(json.dumps(to_feature_collection(truth.boxes, truth.outlines)))
        truth_path(slide).unlink()
        counts.append(truth.counts())
    return counts


def in_interval(figure: dict[str, Any]) -> bool:
    low, high = figure["ci95"]
    return low is not None and low <= figure["value"] <= high


def test_detector_on_slides_annotated_in_qupath_scores_counts_and_records_acceptance(tmp_path: Path) -> None:
    data = tmp_path / "slides"
    data.mkdir()
    truth = annotated_slides(data, 2, seed=7400)
    out = tmp_path / "report"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "detector", "--data", str(data), "--out", str(out),
                     "--resamples", "200", "--accept", "--by", "Dr Lab", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["kind"] == "detector" and doc["unit"] == "slides" and doc["cases"] == 2
    assert [c["truth"] for c in doc["per_case"]] == truth  # the GeoJSON was read back whole
    headline = doc["headline"]
    # the truth is the generator's own: the shipped detector finds nearly all of it
    assert headline["recall"]["value"] >= 0.8 and headline["mAP50"]["value"] >= 0.8
    assert all(in_interval(headline[k]) for k in ("recall", "precision", "mAP50", "mAP50-95"))
    assert headline["mAP50"]["resamples"] == 200 and doc["bootstrap"]["resamples"] == 200
    for case in doc["per_case"]:
        assert abs(case["counted"]["CTC"] - case["truth"]["CTC"]) <= 2
    for cls in ("CTC", "CTM"):
        agreement = doc["details"][f"{cls}_agreement"]
        assert agreement["loa_lower"] <= agreement["mean_difference"] <= agreement["loa_upper"]
        assert 0.0 <= headline[f"{cls}_within_5pct"]["value"] <= 1.0
        assert (out / f"bland-altman-{cls.lower()}.png").stat().st_size > 5000
    assert (out / "detector-curves.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "Site validation: CTC/CTM detector" in html and 'src="bland-altman-ctc.png"' in html
    assert f"{headline['recall']['value']:.3f}" in html
    assert (out / "slides" / "slide-0" / "detections.geojson").is_file()
    model = entry("wsi-ctc-yolo11n")
    record = read_record(tmp_path / "d", model.name, model.sha256)
    assert record is not None and record.accepted_by == "Dr Lab" and record.cases == 2
    assert record.report == str((out / "report.html").resolve())
    assert record.metrics["recall"] == round(headline["recall"]["value"], 4)
    assert f"accepted {model.name} {model.version}" in proc.stdout


def test_detector_on_a_yolo_test_split_without_accept_records_nothing(tmp_path: Path) -> None:
    slide = tmp_path / "gen.tiff"
    truth = write_slide(slide, SlideSpec(width=2048, height=2048, ctc=16, ctm=3, seed=7410))
    data = tmp_path / "yolo"
    tiles = cut_slide(slide, truth, data / "images" / "test", data / "labels" / "test",
                      CutSettings(mpp_um=0.5, tile_px=256, seed=1), random.Random(1))
    write_data_yaml(data, {"test": "images/test"})
    out = tmp_path / "report"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "detector", "--data", str(data), "--out", str(out),
                     "--resamples", "100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["unit"] == "images" and doc["cases"] == tiles == len(doc["per_case"])
    assert doc["headline"]["mAP50"]["value"] >= 0.8 and in_interval(doc["headline"]["mAP50"])
    assert doc["details"]["operating_confidence"] == entry("wsi-ctc-yolo11n").info["confidence"]
    assert "CTC_within_5pct" not in doc["headline"]  # counts per slide need slides
    assert not (tmp_path / "d" / "site-validation").exists()
    wrong = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "detector", "--data", str(data), "--out",
                      str(out), "--split", "val", cwd=tmp_path)
    assert wrong.returncode == 1 and "names no 'val' split" in wrong.stderr


def mri_cases(folder: Path, count: int, seed: int) -> Path:
    cases = [
        case_from_spec(MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8, slice_thickness_mm=4.0,
                                    lesions=2, labels=("benign", "malignant"), seed=seed + i), f"case{i}")
        for i in range(count)
    ]
    return write_case_folder(cases, folder)


def test_mri_chain_beside_the_truth_mask_figures_and_acceptance_of_both_models(tmp_path: Path) -> None:
    data = mri_cases(tmp_path / "cases", 3, 912_100)
    out = tmp_path / "report"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "mri", "--data", str(data), "--out", str(out),
                     "--resamples", "200", "--accept", "--by", "Dr MR", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    headline = doc["headline"]
    assert doc["cases"] == 3 and [m["name"] for m in doc["models"]] == ["mri-lesion-unet", "mri-lesion-svm"]
    assert [c["truth_lesions"] for c in doc["per_case"]] == [2, 2, 2]
    assert headline["mean_dice"]["value"] >= 0.7 and in_interval(headline["mean_dice"])
    assert headline["lesion_sensitivity"]["value"] >= 0.8
    # the truth-mask figures are those of the classifier's own section, over all six labelled lesions
    truth_section = doc["sections"][1]
    operating = entry("mri-lesion-svm").info.get("operating_threshold", 0.5)  # chosen on validation series
    assert truth_section["text"][0].startswith(f"6 lesions at threshold {operating:g}: ")
    assert truth_section["table"]["rows"][0][0] == headline["truth_masks_accuracy"]["value"]
    assert in_interval(headline["truth_masks_accuracy"])
    for key in ("chain_accuracy", "chain_auc", "chain_sensitivity", "chain_specificity",
                "chain_malignant_found_and_called", "chain_false_malignant_per_case"):
        assert headline[key]["value"] is not None and headline[key]["n"] == 3
    chain = doc["details"]["chain"]
    assert chain["malignant_truth"] == 3
    assert headline["chain_malignant_found_and_called"]["value"] == pytest.approx(
        chain["malignant_found_and_called"] / 3, abs=1e-4)
    titles = [s["title"] for s in doc["sections"]]
    assert titles == ["Segmentation (U-Net)", "Classification on the truth masks (radiomics → SVM)",
                      "The chain: U-Net masks → radiomics → SVM"]
    for section in doc["sections"]:
        for figure in section["figures"]:
            assert (out / figure).stat().st_size > 5000
    for name in ("mri-lesion-unet", "mri-lesion-svm"):
        model = entry(name)
        record = read_record(tmp_path / "d", name, model.sha256)
        assert record is not None and record.cases == 3 and record.accepted_by == "Dr MR"
        assert record.metrics["chain_accuracy"] == round(headline["chain_accuracy"]["value"], 4)


def test_segmenter_and_classifier_alone_and_acceptance_needs_a_name(tmp_path: Path) -> None:
    data = mri_cases(tmp_path / "cases", 2, 912_200)
    seg = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "segmenter", "--data", str(data), "--out",
                    str(tmp_path / "seg"), "--resamples", "50", cwd=tmp_path)
    assert seg.returncode == 0, seg.stdout[-3000:] + seg.stderr[-3000:]
    doc = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert set(doc["headline"]) == {"mean_dice", "lesion_sensitivity", "false_lesions_per_case"}
    assert [m["name"] for m in doc["models"]] == ["mri-lesion-unet"]
    dices = [c["dice"] for c in doc["per_case"]]
    assert doc["headline"]["mean_dice"]["value"] == pytest.approx(sum(dices) / 2, abs=1e-3)
    clf = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "classifier", "--data", str(data), "--out",
                    str(tmp_path / "clf"), "--resamples", "50", cwd=tmp_path)
    assert clf.returncode == 0, clf.stdout[-3000:] + clf.stderr[-3000:]
    doc = json.loads((tmp_path / "clf" / "report.json").read_text())
    assert set(doc["headline"]) == {"accuracy", "auc", "sensitivity", "specificity"}
    assert doc["sections"][0]["table"]["columns"] == ["accuracy", "AUC", "sensitivity", "specificity"]
    assert not (tmp_path / "d" / "site-validation").exists()
    refused = oncoagent("--data-dir", str(tmp_path / "d"), "evaluate", "classifier", "--data", str(data), "--out",
                        str(tmp_path / "clf"), "--accept", cwd=tmp_path)
    assert refused.returncode == 2 and "--accept needs --by NAME" in refused.stderr


@pytest.mark.slow  # trains a detector (one epoch), then runs three slides through the pipeline twice
def test_annotated_in_qupath_to_a_trained_evaluated_and_accepted_detector_in_two_commands(tmp_path: Path) -> None:
    data = tmp_path / "slides"
    data.mkdir()
    annotated_slides(data, 3, seed=7420)
    model = tmp_path / "model"
    train = oncoagent(
        "--data-dir", str(tmp_path / "d"), "train", "detector", "--data", str(data), "--epochs", "1", "--batch", "8",
        "--imgsz", "128", "--tile", "128", "--mpp", "2.0", "--dataloader-workers", "0", "--out", str(model),
        "--runs-dir", str(tmp_path / "runs"), "--register", "lab-detector", "--version", "0.1.0", cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "annotated in QuPath" in train.stdout
    dataset = json.loads((data / "yolo" / "dataset.json").read_text())
    assert dataset["source"] == "QuPath GeoJSON annotations"
    assert [dataset["splits"][s]["slides"] for s in ("train", "val", "test")] == [1, 1, 1]
    out = tmp_path / "report"
    evaluate = oncoagent(
        "--data-dir", str(tmp_path / "d"), "evaluate", "detector", "--data", str(data), "--model", "lab-detector",
        "--manifest", str(model / "manifest.json"), "--out", str(out), "--resamples", "50", "--accept",
        "--by", "Dr Lab", cwd=tmp_path,
    )
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["models"][0]["name"] == "lab-detector" and doc["cases"] == 3
    sha = sha256_of(model / "weights.pt")
    assert doc["models"][0]["sha256"] == sha
    record = read_record(tmp_path / "d", "lab-detector", sha)
    assert record is not None and record.version == "0.1.0" and record.cases == 3
