"""``oncoagent process`` and the inspect pipeline on real files from other tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared


def oncoagent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def result(out: Path, name: str) -> dict:
    return json.loads((out / name / "result.json").read_text())


@pytest.mark.parametrize(
    ("path", "fmt", "mpp"),
    [
        ("wsi/CMU-1-Small-Region.svs", "aperio", 0.499),
        ("wsi/test3-DAPI-2-(387).ndpi", "hamamatsu", 0.228),
        ("wsi/openslide-python_boxes.tiff", "generic-tiff", None),
        ("wsi/large_image_yb10kx5k.zstd.tiff", "generic-tiff", None),
    ],
)
def test_real_slides_are_inspected(tmp_path: Path, path: str, fmt: str, mpp: float | None) -> None:
    slide = shared(path)
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(slide), "--out", str(out),
                     "--pipeline", "inspect", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = slide.stem.replace("(", "_").replace(")", "_")
    doc = result(out, name)
    assert doc["pipeline"] == "inspect"
    assert doc["summary"]["format"] == fmt
    if mpp is None:
        assert doc["summary"]["mpp_um"] is None
        assert doc["warnings"][0].startswith("implausible declared resolution 352.")
    else:
        assert doc["summary"]["mpp_um"][0] == pytest.approx(mpp, abs=0.001)
    assert (out / name / "preview.png").stat().st_size > 100


def test_real_mr_series_folders_and_enhanced_mr(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "process",
        str(shared("mri/ge_dwi_series")), str(shared("mri/philips_mr700_series")),
        str(shared("mri/pydicom_emri_small.dcm")), "--out", str(out), "--pipeline", "inspect",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = {d.name: json.loads((d / "result.json").read_text()) for d in out.iterdir() if d.name.startswith("series")}
    by_count = {doc["summary"]["instances"]: doc for doc in docs.values()}
    ge = by_count[14]
    assert ge["summary"]["manufacturer"].startswith("GE")
    assert "repeated slice positions (several images per location)" in ge["warnings"]
    assert by_count[7]["summary"]["rows"] == 16
    enhanced = by_count[1]
    assert enhanced["summary"]["frames"] > 1
    assert "ok" in proc.stdout and "0 failed" in proc.stdout


def test_broken_inputs_fail_with_reasons_and_a_nonzero_exit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(shared("broken/openslide-python_unopenable.tiff"), bad / "unopenable.tiff")
    (bad / "notes.txt").write_text("not an image")
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "process",
        str(bad / "unopenable.tiff"), str(bad / "notes.txt"), str(tmp_path / "absent.svs"),
        str(shared("mri/MR_small.dcm")),
        "--out", str(out), cwd=tmp_path,
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAILED  unopenable: unopenable.tiff: the slide is corrupt") for line in lines), lines
    assert any("notes.txt: neither DICOM nor a known slide format" in line for line in lines), lines
    assert any("absent.svs: no such file or folder" in line for line in lines), lines
    # the single-image MR series is not routed by the default rules (min_slices 8), and says why
    assert any("no rule matched" in line and "1 slice(s), rule wants at least 8" in line for line in lines)
    assert "Traceback" not in proc.stderr
    assert "0 succeeded, 4 failed" in proc.stdout


def test_explicit_pipeline_bypasses_routing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "process", str(shared("mri/MR_small.dcm")),
        "--pipeline", "inspect", "--out", str(out), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (doc_dir,) = list(out.glob("series-*"))
    assert json.loads((doc_dir / "result.json").read_text())["summary"]["instances"] == 1


def test_patient_names_never_reach_the_logs(tmp_path: Path) -> None:
    import pydicom

    source = shared("mri/MR_small.dcm")
    ds = pydicom.dcmread(source)
    ds.PatientName = "SECRETNAME^PATIENT"
    ds.PatientID = "MRN-SECRET-42"
    target = tmp_path / "named.dcm"
    ds.save_as(target)
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "--log-level", "DEBUG", "process", str(target),
        "--pipeline", "inspect", "--out", str(tmp_path / "out"), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    everything = proc.stdout + proc.stderr + "".join(
        p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*.json")
    )
    assert "SECRETNAME" not in everything and "MRN-SECRET-42" not in everything
    assert ds.SeriesInstanceUID in proc.stderr  # logs do carry UIDs


def test_outbox_commands(tmp_path: Path) -> None:
    from agent.store import Store

    data = tmp_path / "d"
    Store.open(f"sqlite:///{data / 'oncoagent.db'}").close()
    config = tmp_path / "c.yaml"
    config.write_text("destinations: [{name: pacs, ae_title: PACS, host: 127.0.0.1, port: 104}]\n")
    base = ("--config", str(config), "--data-dir", str(data), "outbox")
    source = str(shared("mri/MR_small.dcm"))
    added = oncoagent(*base, "add", "pacs", source, str(tmp_path / "missing.dcm"), cwd=tmp_path)
    assert added.returncode == 1  # one of the two files could not be queued
    assert "queued " in added.stdout and "missing.dcm: not a readable DICOM object" in added.stdout
    unknown = oncoagent(*base, "add", "nowhere", source, cwd=tmp_path)
    assert unknown.returncode == 2 and "no destination named 'nowhere' (destinations: pacs)" in unknown.stderr
    (item,) = json.loads(oncoagent(*base, "list", "--json", cwd=tmp_path).stdout)
    assert item["status"] == "pending" and item["destination"] == "pacs"
    assert oncoagent(*base, "cancel", str(item["id"]), cwd=tmp_path).returncode == 0
    assert json.loads(oncoagent(*base, "list", "--json", cwd=tmp_path).stdout)[0]["status"] == "cancelled"
    assert oncoagent(*base, "retry", str(item["id"]), cwd=tmp_path).returncode == 0
    again = oncoagent(*base, "cancel", "99", cwd=tmp_path)
    assert again.returncode == 1 and "no outbox item 99" in again.stderr
