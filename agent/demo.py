"""``oncoagent demo`` (``make demo``): generated sample inputs through a real daemon, then where results are.

The demo owns its data directory (it writes a marker there) and starts it afresh each time: it generates a
brightfield slide, a fluorescence slide and an MR series, starts ``oncoagent run`` as a subprocess, drops the
slides into the daemon's inbox as a scanner would, sends the MR series to the daemon's DICOM port with C-STORE
as a modality would, waits until every job has finished, stops the daemon with SIGTERM and prints each result,
with the line its report opens with while its models are not validated at this site (the demo's fresh data
directory has no site-validation record, so every report opens with "model not validated at this site").
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from agent.config import LoadedSettings
from agent.errors import OncoAgentError
from agent.passwords import hash_password
from agent.records import JobStatus
from agent.review_records import Role
from agent.store import Store
from agent.store.users import add_user
from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, volume_geometry, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from reports.render import REPORT_JSON
from reports.validation_mark import mark_of

MARKER = ".oncoagent-demo"
# An abdominal field of view (384 mm) with one malignant and one benign lesion, apart from each other. The seed is
# the first of 103-109 at which the generator keeps the two lesions apart (at 103 they overlap) and the shipped
# U-Net -> radiomics -> SVM chain classifies both correctly: the demo shows a correct finding of each class. It is
# not an accuracy figure: over seeds 104-109 (this spec) that chain called 3 of 6 malignant lesions benign.
MR_SPEC = MRSeriesSpec(rows=256, columns=256, slices=48, pixel_spacing_mm=1.5, slice_thickness_mm=4.0, seed=104,
                       lesions=2, labels=("malignant", "benign"))
MR_TRUTH = "mr-series.truth.json"
DEMO_USER = "demo"


def run_demo(loaded: LoadedSettings, timeout: float) -> int:
    settings = loaded.settings
    root = settings.data_dir
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise OncoAgentError(f"{root} holds data that is not the demo's; run the demo with another --data-dir")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by oncoagent demo; removed and rebuilt by each run\n")

    samples = root / "samples"
    print(f"generating sample inputs in {samples} ...", flush=True)
    write_slide(samples / "demo-brightfield.tiff", SlideSpec(width=6144, height=6144, mode="brightfield", seed=101))
    write_slide(samples / "demo-fluorescence.tiff", SlideSpec(width=6144, height=6144, mode="fluorescence", seed=102))
    series = write_mr_series(samples / "mr-series", MR_SPEC)
    _write_mr_truth(series, MR_SPEC, samples / MR_TRUTH)
    expected_inputs = 3

    env = dict(os.environ)
    port = _free_port()
    env.update(
        {
            "ONCOAGENT_INGEST__SETTLE_SECONDS": "1",
            "ONCOAGENT_INGEST__QUIET_SECONDS": "2",
            "ONCOAGENT_INGEST__SCAN_INTERVAL_S": "0.5",
            "ONCOAGENT_SCP__HOST": "127.0.0.1",
            "ONCOAGENT_SCP__PORT": str(port),
            "ONCOAGENT_HTTP__PORT": str(_free_port()),  # never the configured one a running daemon may hold
            "ONCOAGENT_WEB__PORT": "0",
        }
    )
    command = [sys.executable, "-m", "agent.cli", "--data-dir", str(root)]
    if loaded.config_file is not None:
        command += ["--config", str(loaded.config_file)]
    log_path = root / "daemon.log"
    print(f"starting the daemon (log: {log_path}) ...", flush=True)
    with log_path.open("wb") as daemon_log:
        daemon = subprocess.Popen([*command, "run"], env=env, stdout=daemon_log, stderr=subprocess.STDOUT)
        try:
            _drop(samples / "demo-brightfield.tiff", root / "inbox")
            _drop(samples / "demo-fluorescence.tiff", root / "inbox")
            _send_dicom(series.files, port, settings.scp.ae_title, daemon)
            finished = _wait_for_jobs(root, expected_inputs, timeout, daemon)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
    print(f"daemon stopped (exit status {code})")
    status = _report(root, finished and code == 0)
    _worklist_login(loaded, root)
    return status


def _worklist_login(loaded: LoadedSettings, root: Path) -> None:
    """An admin login for the demo's worklist (its password beside the data, readable by its owner only), and
    the one command that serves the worklist over the demo's results."""
    password = secrets.token_urlsafe(12)
    store = Store.open(f"sqlite:///{root / 'oncoagent.db'}", migrate=False)
    try:
        add_user(store.engine, DEMO_USER, Role.ADMIN, hash_password(password), time.time())
    finally:
        store.close()
    login = root / "demo-login.txt"
    login.touch(mode=0o600)
    login.write_text(f"{DEMO_USER} {password}\n", encoding="utf-8")
    web = loaded.settings.web
    command = [Path(sys.executable).with_name("oncoagent").as_posix(), "--data-dir", str(root)]
    if loaded.config_file is not None:
        command += ["--config", str(loaded.config_file)]
    scheme = "https" if web.tls_cert is not None else "http"
    print()
    print("the worklist: serve it over the demo's results with")
    print(f"  {shlex.join([*command, 'run'])}")
    print(f"then open {scheme}://{web.host}:{web.port}/ and sign in as {DEMO_USER} / {password}  "
          f"(an admin; the password is also in {login})")


def _write_mr_truth(series: MRSeries, spec: MRSeriesSpec, target: Path) -> None:
    """The generated lesions (class, centre in patient coordinates, volume) beside the series, as the slides
    have theirs: what the findings can be checked against."""
    origin, direction = volume_geometry(spec)
    matrix = np.asarray(direction).reshape(3, 3)
    voxel_ml = float(np.prod(series.spacing_mm)) / 1000
    lesions = []
    for truth in series.lesions:
        k, r, c = truth.centre_ijk
        offset = matrix @ np.array([c * spec.pixel_spacing_mm, r * spec.pixel_spacing_mm, k * spec.slice_thickness_mm])
        lesions.append({"index": truth.index, "label": truth.label, "radius_mm": truth.radius_mm,
                        "volume_ml": round(truth.voxels * voxel_ml, 3),
                        "centre_lps_mm": [round(float(v), 2) for v in np.asarray(origin) + offset]})
    target.write_text(json.dumps({"series_uid": series.series_uid, "lesions": lesions}, indent=1), encoding="utf-8")


def _drop(source: Path, inbox: Path) -> None:
    """Copy into the inbox under a hidden name, then rename: the daemon never sees a half-written file."""
    inbox.mkdir(parents=True, exist_ok=True)
    hidden = inbox / f".{source.name}.copying"
    shutil.copyfile(source, hidden)
    os.replace(hidden, inbox / source.name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _send_dicom(files: list[Path], port: int, ae_title: str, daemon: subprocess.Popen[bytes]) -> None:
    """C-STORE the files to the daemon, as a modality would; waits for the daemon's SCP to answer."""
    ae = AE(ae_title="DEMO-MODALITY")
    for sop_class in {str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    deadline = time.monotonic() + 60
    while not _listening(port):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise OncoAgentError(f"the daemon's DICOM port {port} does not answer")
        time.sleep(0.3)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        raise OncoAgentError(f"the daemon's DICOM port {port} refused the association")
    try:
        failed = [f.name for f in files if int(getattr(assoc.send_c_store(f), "Status", -1)) != 0]
    finally:
        assoc.release()
    if failed:
        raise OncoAgentError(f"the daemon refused {len(failed)} instance(s): {', '.join(failed[:5])}")
    print(f"sent {len(files)} MR instances to the daemon's DICOM port {port}", flush=True)


def _wait_for_jobs(root: Path, expected_inputs: int, timeout: float, daemon: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            print(f"the daemon exited early with status {daemon.returncode}; see {root / 'daemon.log'}")
            return False
        db = root / "oncoagent.db"
        if db.exists():
            store = Store.open(f"sqlite:///{db}", migrate=False)
            try:
                counts = store.counts()
            except OncoAgentError:
                counts = None
            finally:
                store.close()
            if counts is not None:
                jobs = counts["jobs"]
                states = counts["inputs_by_state"]
                line = "jobs: " + ", ".join(f"{k} {v}" for k, v in jobs.items() if v)
                if line != last:
                    print("  " + line, flush=True)
                    last = line
                settled = states["routed"] + states["ignored"]
                pending = jobs[JobStatus.QUEUED.value] + jobs[JobStatus.RUNNING.value]
                if settled >= expected_inputs and pending == 0:
                    return True
        time.sleep(0.5)
    print(f"timed out after {timeout:.0f} s; see {root / 'daemon.log'}")
    return False


def _finding(summary: dict[str, Any]) -> str:
    """One line a person can read: what the pipeline found."""
    if "ctc_count" in summary:
        area = summary.get("tissue_area_mm2", 0)
        return (f"{summary['ctc_count']} CTC, {summary['ctm_count']} CTM on {area:.2f} mm² of tissue, "
                f"triage priority {summary.get('priority', '?')}")
    if "series_summary" in summary:
        return str(summary["series_summary"].get("finding", ""))
    return ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, str | int | float))[:100]


def _lesion_lines(summary: dict[str, Any]) -> list[str]:
    """One line per lesion of an MRI result: volume, malignancy probability and class."""
    lines = []
    for lesion in summary.get("lesions", []):
        probability = lesion.get("malignancy_probability")
        chance = "not classified" if probability is None else f"malignancy probability {probability:.2f}"
        lines.append(f"lesion {lesion['index']}: {lesion['volume_ml']:.2f} ml, {chance}, "
                     f"{lesion.get('label') or 'no class'}")
    return lines


def _report_mark(result_path: Path | None) -> str | None:
    """The site-validation mark a result's report opens with (report.json holds the report's content)."""
    if result_path is None:
        return None
    try:
        content = json.loads((result_path / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return mark_of(content) if isinstance(content, dict) else None


def _report(root: Path, finished: bool) -> int:
    store = Store.open(f"sqlite:///{root / 'oncoagent.db'}", migrate=False)
    try:
        jobs = list(reversed(store.list_jobs()))
        inputs = store.list_inputs()
        store_summaries = {job.id: store.job_summary(job.id) for job in jobs}
    finally:
        store.close()
    print()
    print("results:")
    failed = marked = 0
    for job in jobs:
        if job.status is JobStatus.SUCCEEDED:
            summary = store_summaries.get(job.id) or {}
            print(f"  job {job.id} {job.pipeline} {job.pipeline_version}: {_finding(summary)}")
            for line in _lesion_lines(summary):
                print(f"      {line}")
            print(f"      {job.result_path}/result.json")
            if job.result_path is not None and (job.result_path / "report.pdf").exists():
                print(f"      {job.result_path}/report.pdf")
            mark = _report_mark(job.result_path)
            if mark is not None:
                marked += 1
                print(f"      the report's first line: {mark}")
        else:
            failed += 1
            print(f"  job {job.id} {job.pipeline}: {job.status.value}: {job.last_error}")
    for inp in inputs:
        if inp.reason:
            print(f"  input {inp.id} ({inp.kind.value}) ignored: {inp.reason}")
    if marked:
        print(f"  {marked} result(s) come from models not validated at this site: see `oncoagent models`")
    print()
    print(f"data directory: {root}   (inspect with: .venv/bin/oncoagent --data-dir {root} status)")
    return 0 if finished and not failed and jobs else 1
