"""`make demo` runs `oncoagent demo`: the same command, checked here so the README's first screen stays true."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.browser import chromium, page_of, sign_in
from tests.support.net import network_isolated
from tests.support.waiting import wait_for


@pytest.mark.timeout(900)
def test_demo_runs_generated_samples_through_the_daemon(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ONCOAGENT_WEB__PORT", None)  # the configured port, as a user's shell has it
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(data), "demo", "--timeout", "700"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=800, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "daemon stopped (exit status 0)" in proc.stdout
    result_files = sorted(data.glob("results/job-*/result.json"))
    assert len(result_files) == 3
    docs = [json.loads(p.read_text()) for p in result_files]
    assert sorted((d["input"]["kind"], d["pipeline"]) for d in docs) == [
        ("dicom-series", "mri-tumour"), ("slide", "wsi-ctc"), ("slide", "wsi-ctc")
    ]
    # the shipped models are validated at no fresh site: each result's report opens with the mark, and the demo
    # prints that line under each result
    printed = "      the report's first line: model not validated at this site; trained on generated data ("
    assert proc.stdout.count(printed) == 3, proc.stdout
    assert all(f"the report's first line: {d['validation_mark']}\n" in proc.stdout for d in docs)
    for path in result_files:
        assert str(path) in proc.stdout  # the demo says where each result and report is
        assert str(path.parent / "report.pdf") in proc.stdout and (path.parent / "report.pdf").stat().st_size > 0
    for slide in (d for d in docs if d["pipeline"] == "wsi-ctc"):
        truth = json.loads((data / "samples" / f"{Path(slide['input']['key']).name}.truth.json").read_text())
        assert slide["summary"]["ctc_count"] > 0 and slide["summary"]["ctm_count"] > 0
        assert abs(slide["summary"]["ctc_count"] - truth["counts"]["CTC"]) <= 0.2 * truth["counts"]["CTC"]
        assert f"{slide['summary']['ctc_count']} CTC, {slide['summary']['ctm_count']} CTM" in proc.stdout
    series = next(d for d in docs if d["pipeline"] == "mri-tumour")
    assert series["summary"]["volume"] and series["summary"]["series_summary"]["finding"] in proc.stdout
    # every generated lesion is found where it is, with its class; the demo prints each lesion
    truth = json.loads((data / "samples" / "mr-series.truth.json").read_text())
    assert truth["series_uid"] == series["input"]["series_uid"] and len(truth["lesions"]) == 2
    found = series["summary"]["lesions"]
    for lesion in truth["lesions"]:
        near = [f for f in found if math.dist(f["centroid_lps_mm"], lesion["centre_lps_mm"]) < lesion["radius_mm"]]
        assert len(near) == 1, (lesion, found)
        assert near[0]["label"] == lesion["label"]
        assert 0.5 * lesion["volume_ml"] < near[0]["volume_ml"] < 2 * lesion["volume_ml"]
    for f in found:
        line = (f"lesion {f['index']}: {f['volume_ml']:.2f} ml, malignancy probability "
                f"{f['malignancy_probability']:.2f}, {f['label']}")
        assert line in proc.stdout
    assert (data / ".oncoagent-demo").exists()  # its own folder: the next run starts it afresh
    _the_printed_command_serves_the_worklist(proc.stdout, env, tmp_path)


def _the_printed_command_serves_the_worklist(stdout: str, env: dict[str, str], shots: Path) -> None:
    """The demo ends with the command that serves the worklist, its URL and a login: all three work."""
    lines = stdout.splitlines()
    command = shlex.split(lines[lines.index("the worklist: serve it over the demo's results with") + 1])
    found = re.search(r"then open (http://\S+/) and sign in as (\S+) / (\S+)", stdout)
    assert found is not None, stdout
    url, name, password = found.groups()
    if not network_isolated():
        pytest.skip("the served daemon takes the configured ports: run through tests/run-isolated.sh")
    served = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(url + "login"), 120, interval=0.2, what="the demo's worklist")
        with chromium() as browser, page_of(browser) as page:
            sign_in(page, url.rstrip("/"), name, password)
            page.wait_for_selector("body[data-loaded]")
            assert page.locator("tr.case-row").count() == 3, "both slides and the MR series are on the worklist"
            badges = page.locator("tr.case-row .flag.unvalidated")
            assert badges.count() == 3, "every row's result comes from models not validated at this site"
            assert (badges.first.get_attribute("title") or "").startswith("model not validated at this site;")
            page.screenshot(path=str(shots / "demo-worklist.png"))
    finally:
        served.terminate()
        served.wait(timeout=60)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


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
