"""A daemon that has analysed one generated MR series with the real mri-tumour pipeline, with web accounts for
each role: the MR case the web tests review."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.passwords import hash_password
from agent.review_records import Role
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, write_mr_series
from tests.e2e.test_mri_daemon import CONFIG, drop  # routing to mri-tumour, quick ingest; the inbox
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

SPEC = MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8, slice_thickness_mm=4.0, lesions=1,
                    seed=900_301)
PASSWORD = "correct horse battery staple"
USERS = {"rita": Role.RADIOLOGIST, "paul": Role.PATHOLOGIST}


@dataclass
class MRCase:
    daemon: DaemonProcess
    series: MRSeries
    job_id: int
    result_path: Path
    summary: dict[str, Any]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.web_port}"


@contextmanager
def analysed_mr_case(root: Path, config: dict[str, Any] | None = None) -> Iterator[MRCase]:
    """A running daemon (its config the MRI test's, plus ``config``'s keys) whose inbox got the series; yields once
    its job succeeded and the accounts exist."""
    series = write_mr_series(root / "series", SPEC)
    (root / "daemon").mkdir(parents=True, exist_ok=True)
    daemon = DaemonProcess(root / "daemon", {**CONFIG, **(config or {})})
    daemon.start()
    try:
        drop(daemon, series.files, "mr")
        job = wait_for(lambda: _finished_job(daemon), 300, interval=0.5, what="the MR series' job")
        assert job is not None and job["status"] == "succeeded", job
        store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}")
        try:
            for name, role in USERS.items():
                store.add_user(name, role, hash_password(PASSWORD), time.time())
            found = store.get_job(int(job["id"]))
        finally:
            store.close()
        assert found.result_path is not None
        result = json.loads((Path(found.result_path) / "result.json").read_text())
        yield MRCase(daemon, series, int(job["id"]), Path(found.result_path), result["summary"])
    finally:
        daemon.stop()


def _finished_job(daemon: DaemonProcess) -> dict[str, Any] | None:
    listed: list[dict[str, Any]] = daemon.cli_json("jobs", "list", "--json")
    done = [j for j in listed if j["status"] in ("succeeded", "failed")]
    return done[0] if done else None


@contextmanager
def signed_in(base_url: str, name: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """An HTTP client with a session: the login form's CSRF token from its page, then the form posted."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None, page.text
        answer = client.post("/login", data={"name": name, "password": password, "csrf": token.group(1),
                                             "next": "/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/", (answer.status_code, answer.text)
        yield client


def csrf_of(client: httpx.Client) -> str:
    me = client.get("/api/me")
    assert me.status_code == 200, me.text
    return str(me.json()["csrf"])
