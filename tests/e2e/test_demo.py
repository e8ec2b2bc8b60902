"""`make demo` runs `oncoagent demo`: the same command, checked here so the README's first screen stays true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_runs_generated_samples_through_the_daemon(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(data), "demo", "--timeout", "300"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "daemon stopped (exit status 0)" in proc.stdout
    result_files = sorted(data.glob("results/job-*/result.json"))
    assert len(result_files) == 3
    docs = [json.loads(p.read_text()) for p in result_files]
    kinds = sorted(d["input"]["kind"] for d in docs)
    assert kinds == ["dicom-series", "slide", "slide"]
    for path in result_files:
        assert str(path) in proc.stdout  # the demo says where each result is
    series = next(d for d in docs if d["input"]["kind"] == "dicom-series")
    assert series["summary"]["instances"] == 24 and series["summary"]["geometry"]["slice_spacing_mm"] == 3.0
    # a second run starts afresh in its own folder instead of finding old results
    again = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(data), "demo", "--timeout", "300"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=400,
        check=False,
    )
    assert again.returncode == 0, again.stdout
    assert len(list(data.glob("results/job-*/result.json"))) == 3


def test_demo_refuses_a_data_dir_that_is_not_its_own(tmp_path: Path) -> None:
    data = tmp_path / "precious"
    data.mkdir()
    (data / "oncoagent.db").write_text("not the demo's")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(data), "demo"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "holds data that is not the demo's" in proc.stderr
    assert (data / "oncoagent.db").read_text() == "not the demo's"
