"""``oncoagent process SLIDE --pipeline wsi-ctc`` as a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import REPO, shared


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
        timeout=300,
    )


def test_process_a_generated_slide_writes_counts_detections_and_geojson(tmp_path: Path) -> None:
    truth = write_slide(tmp_path / "case-17.tiff", SlideSpec(width=6144, height=6144, ctc=30, ctm=5, seed=7200))
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(tmp_path / "case-17.tiff"),
                     "--pipeline", "wsi-ctc", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 succeeded, 0 failed" in proc.stdout
    doc = json.loads((out / "case-17" / "result.json").read_text())
    assert doc["pipeline"] == "wsi-ctc" and doc["pipeline_version"] == "1.0.0"
    summary = doc["summary"]
    expected = truth.counts()
    assert abs(summary["ctc_count"] - expected["CTC"]) <= 0.1 * expected["CTC"]
    assert abs(summary["ctm_count"] - expected["CTM"]) <= 1
    assert sorted(doc["files"]) == ["detections.geojson", "detections.json", "preview.png"]
    (model,) = doc["models"]
    manifest = json.loads((REPO / "pipelines" / "models" / "wsi" / "manifest.json").read_text())
    assert model == {"name": "wsi-ctc-yolo11n", "version": manifest["wsi-ctc-yolo11n"]["version"],
                     "sha256": manifest["wsi-ctc-yolo11n"]["sha256"]}
    features = json.loads((out / "case-17" / "detections.geojson").read_text())["features"]
    assert len(features) == summary["ctc_count"] + summary["ctm_count"]
    assert {f["properties"]["classification"]["name"] for f in features} == {"CTC", "CTM"}
    detections = json.loads((out / "case-17" / "detections.json").read_text())["detections"]
    assert detections == summary["detections"]


def test_bad_slides_fail_with_reasons_and_the_run_goes_on(tmp_path: Path) -> None:
    write_slide(tmp_path / "good.tiff", SlideSpec(width=2048, height=2048, ctc=2, ctm=0, seed=7201))
    data = (tmp_path / "good.tiff").read_bytes()
    (tmp_path / "cut.tiff").write_bytes(data[: len(data) // 2])
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(tmp_path / "cut.tiff"),
                     str(shared("broken/openslide-python_unreadable.svs")), str(tmp_path / "good.tiff"),
                     "--pipeline", "wsi-ctc", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAILED  cut: cut.tiff: a TIFF that openslide cannot read") for line in lines), lines
    assert any(
        line.startswith("FAILED  openslide-python_unreadable: openslide-python_unreadable.svs: the slide is corrupt")
        for line in lines
    ), lines
    assert any(line.startswith("ok      good:") for line in lines), lines
    assert "Traceback" not in proc.stderr


def test_without_a_fallback_a_slide_without_resolution_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "oncoagent.yaml"
    config.write_text(yaml.safe_dump({"pipelines": {"wsi-ctc": {"fallback_mpp_um": None}}}))
    proc = oncoagent("--config", str(config), "--data-dir", str(tmp_path / "d"), "process",
                     str(shared("wsi/openslide-python_boxes.tiff")), "--pipeline", "wsi-ctc",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "declares an implausible resolution of 352.8 µm/px" in proc.stdout
    assert "no fallback resolution is configured" in proc.stdout
