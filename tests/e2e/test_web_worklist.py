"""The triage worklist end to end: a daemon analyses two generated slides (with patient context) and serves the
worklist; a pathologist reviews the high-priority one in a real headless Chromium and signs it off; the verified
SR reaches Orthanc through the outbox. Beside it the security rules, over plain HTTP against the same daemon:
anonymous requests, roles, CSRF, the login rate limit and the audit trail.

One daemon (and one Orthanc) serves the whole module; the tests that change a case use their own.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.config import AuthMode, Settings, WebSettings
from agent.passwords import hash_password
from agent.store import Store, users, web_audit
from agent.web.server import WebServer
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.support.browser import chromium, page_of, sign_in
from tests.support.daemon import DaemonProcess
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for

PASSWORDS = {"path1": "pathologist-pw-1", "rad1": "radiologist-pw-1", "admin1": "admin-pw-1"}
ROLES = {"path1": "pathologist", "rad1": "radiologist", "admin1": "admin"}


@dataclass
class Site:
    daemon: DaemonProcess
    orthanc: Orthanc
    base: str
    slides: dict[str, int]  # slide file name -> job id
    root: Path

    def store(self) -> Store:
        return Store.open(f"sqlite:///{self.daemon.data_dir / 'oncoagent.db'}")


def _slide(folder: Path, name: str, spec: SlideSpec, patient: str, accession: str) -> Path:
    path = folder / name
    write_slide(path, spec)
    (folder / f"{name}.json").write_text(json.dumps({"patient_id": patient, "accession_number": accession,
                                                     "patient_name": f"Test^{patient}"}))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web-site")
    orthanc = Orthanc(root / "orthanc").start()
    daemon = DaemonProcess(root, {
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
        "executor": {"workers": 2, "poll_interval_s": 0.1},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 0.5},
        "web": {"login_attempts": 3},
    })
    generated = root / "generated"
    generated.mkdir()
    high = _slide(generated, "high.tiff", SlideSpec(width=1536, height=1536, ctc=12, ctm=1, seed=4101),
                  "WEB-P1", "WEBACC1")
    low = _slide(generated, "low.tiff", SlideSpec(width=1536, height=1536, ctc=1, ctm=0, seed=4102),
                 "WEB-P2", "WEBACC2")
    try:
        daemon.start()
        store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}")
        for name, password in PASSWORDS.items():
            users.add_user(store.engine, name, ROLES[name], hash_password(password), time.time())
        inbox = daemon.data_dir / "inbox"
        for path in (high, low):
            for part in (path.with_name(path.name + ".json"), path):  # the sidecar first, then the slide
                (inbox / f".{part.name}").write_bytes(part.read_bytes())
                (inbox / f".{part.name}").rename(inbox / part.name)
        wait_for(lambda: daemon.status()["jobs"].get("succeeded") == 2, 300, interval=0.5,
                 what="both slides analysed")
        slides = {}
        for result in (daemon.data_dir / "results").glob("job-*/result.json"):
            doc = json.loads(result.read_text())
            slides[Path(doc["input"]["key"]).name] = int(doc["job_id"])
        store.close()
        yield Site(daemon, orthanc, f"http://127.0.0.1:{daemon.web_port}", slides, root)
    finally:
        daemon.stop()
        orthanc.stop()


def _session(site: Site, name: str) -> tuple[httpx.Client, str]:
    """A signed-in HTTP client (as a browser does it: the login form's CSRF field and cookie) and its CSRF token."""
    client = httpx.Client(base_url=site.base, timeout=30)
    form = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post("/login", data={"name": name, "password": PASSWORDS[name], "csrf": token.group(1),
                                         "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    return client, client.get("/api/me").json()["csrf"]


def test_a_pathologist_reviews_the_high_priority_slide_and_signs_it_off(site: Site, tmp_path: Path) -> None:
    job = site.slides["high.tiff"]
    with chromium() as browser, page_of(browser) as page:
        sign_in(page, site.base, "path1", PASSWORDS["path1"])
        page.wait_for_selector("body[data-loaded]")
        rows = page.locator("tr.case-row")
        assert rows.count() == 2
        assert rows.nth(0).get_attribute("data-job") == str(job), "the high-priority slide comes first"
        page.screenshot(path=str(tmp_path / "worklist.png"))

        rows.nth(0).click()
        page.wait_for_url(f"{site.base}/cases/{job}")
        page.wait_for_selector("body[data-loaded]")
        page.wait_for_function("parseInt(document.body.dataset.tiles || '0') > 0")
        shown = int(page.evaluate("document.body.dataset.overlays"))
        ai_ctc, ai_ctm = int(page.inner_text("#ai-CTC")), int(page.inner_text("#ai-CTM"))
        assert shown == ai_ctc + ai_ctm > 2, "every detection is drawn over the slide"
        assert page.locator(".crop").count() == shown

        rejected = []
        for saved in (1, 2):
            page.keyboard.press("j")
            rejected.append(page.evaluate("document.body.dataset.current"))
            page.keyboard.press("r")
            page.wait_for_function(f"document.body.dataset.saved === '{saved}'")
        page.keyboard.press("a")
        page.locator("#viewer").click(position={"x": 300, "y": 250})
        page.wait_for_function("document.body.dataset.saved === '3'")
        assert page.inner_text("#n-rejected") == "2" and page.inner_text("#n-added") == "1"
        result_total = int(page.inner_text("#result-CTC")) + int(page.inner_text("#result-CTM"))
        assert result_total == ai_ctc + ai_ctm - 2 + 1
        page.fill("#note", "two look-alikes rejected")
        page.click("#sign-off")
        page.wait_for_function("document.body.dataset.review === 'signed_off'")
        assert "Signed off by path1" in page.inner_text("#signed")
        page.screenshot(path=str(tmp_path / "slide-case.png"))

        page.goto(site.base + "/")
        page.wait_for_selector("body[data-loaded]")
        row = page.locator(f'tr.case-row[data-job="{job}"]')
        assert "signed off" in row.inner_text() and "path1" in row.inner_text()
        page.screenshot(path=str(tmp_path / "worklist-signed.png"))

    client, _csrf = _session(site, "path1")
    case = client.get(f"/api/cases/{job}").json()
    assert case["status"] == "signed_off" and case["review"]["signed_by"] == "path1"
    assert case["counts"]["rejected"] == 2 and case["counts"]["added"] == 1
    assert {d["target"] for d in case["decisions"] if d["decision"] == "rejected"} == {f"d:{i}" for i in rejected}
    expected = f"{case['counts']['result']['CTC']} CTC, {case['counts']['result']['CTM']} CTM"
    assert case["finding"].startswith(expected)
    pdf = client.get(f"/api/cases/{job}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf.content, capture_output=True, check=True).stdout
    assert b"Reviewed and signed by path1" in text and b"two look-alikes rejected" in text

    srs = wait_for(site.orthanc.verified_srs, 120, interval=0.5, what="the verified SR in Orthanc")
    assert len(srs) == 1
    observer = srs[0]["VerifyingObserverSequence"][0]
    assert observer["VerifyingObserverName"] == "path1"
    assert srs[0]["PatientID"] == "WEB-P1"
    log = site.daemon.log()
    assert "WEB-P1" not in log and "Test^WEB" not in log and "WEBACC1" not in log, "no patient data in the log"


def test_every_page_and_api_route_refuses_an_anonymous_request(site: Site) -> None:
    client = httpx.Client(base_url=site.base, timeout=30)
    job = site.slides["low.tiff"]
    for page in ("/", f"/cases/{job}"):
        answer = client.get(page)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), page
    spec = client.get("/api/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", lambda m: "0" if m.group(0) in ("{level}", "{col}", "{row}", "{index}")
                          else str(job), path)
        for method in operations:
            answer = client.request(method.upper(), concrete, json={})
            assert answer.status_code == 401, f"{method.upper()} {concrete}: {answer.status_code}"
            checked += 1
    assert checked >= 8


def test_a_radiologist_cannot_open_a_slide_case(site: Site) -> None:
    client, csrf = _session(site, "rad1")
    job = site.slides["low.tiff"]
    assert client.get("/api/cases").json()["total"] == 0, "slides are not on a radiologist's worklist"
    assert client.get(f"/api/cases/{job}").status_code == 403
    assert client.get(f"/cases/{job}").status_code == 403
    assert client.get(f"/api/cases/{job}/slide.dzi").status_code == 403
    answer = client.post(f"/api/cases/{job}/decisions", json={"target": "d:0", "decision": "rejected"},
                         headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 403


def test_a_change_without_the_csrf_token_is_refused(site: Site) -> None:
    client, csrf = _session(site, "path1")
    job = site.slides["low.tiff"]
    body = {"target": "d:0", "decision": "rejected"}
    assert client.post(f"/api/cases/{job}/decisions", json=body).status_code == 403
    assert client.post(f"/api/cases/{job}/decisions", json=body,
                       headers={"X-CSRF-Token": "x" + csrf[1:]}).status_code == 403
    assert client.post(f"/api/cases/{job}/sign-off", json={}).status_code == 403
    case = client.get(f"/api/cases/{job}").json()
    assert case["decisions"] == [] and case["review"] is None, "nothing changed"
    other, _ = _session(site, "admin1")
    assert other.post(f"/api/cases/{job}/decisions", json=body,
                      headers={"X-CSRF-Token": csrf}).status_code == 403, "another session's token is not valid"
    logout = client.post("/logout", data={"csrf": "wrong"})
    assert logout.status_code == 403
    assert client.get("/api/me").status_code == 200, "still signed in"


def test_failed_logins_are_limited_and_everything_is_audited(site: Site) -> None:
    # from an address of its own, so that the limit it reaches does not lock the other tests' logins out
    client = httpx.Client(base_url=site.base, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.7"))

    def attempt(password: str) -> httpx.Response:
        form = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        return client.post("/login", data={"name": "rad1", "password": password, "csrf": token.group(1)})

    for _ in range(3):  # web.login_attempts is 3 for this daemon
        answer = attempt("wrong")
        assert answer.status_code == 303 and "wrong+name+or+password" in answer.headers["location"]
    answer = attempt(PASSWORDS["rad1"])
    assert answer.status_code == 429, "the right password is not even checked once the limit is reached"
    assert client.get("/api/me").status_code == 401

    viewer, _csrf = _session(site, "path1")
    job = site.slides["low.tiff"]
    assert viewer.get(f"/api/cases/{job}").status_code == 200
    store = site.store()
    try:
        events = web_audit.since(store.engine, 0)
    finally:
        store.close()
    actions = {(e.user_name, e.action, e.job_id) for e in events}
    assert ("path1", "view", job) in actions
    assert (None, "login-failed", None) in actions and (None, "login-refused", None) in actions
    assert ("rad1", "refused", job) in actions, "the radiologist's refused view is in the trail"
    assert {e.address for e in events if e.action in ("login-failed", "login-refused")} == {"127.0.0.7"}


def test_the_proxy_header_is_believed_only_from_a_trusted_proxy(site: Site) -> None:
    store = site.store()
    config = Settings(web=WebSettings(port=0, auth=AuthMode.PROXY, trusted_proxies=["127.0.0.5"]))
    server = WebServer(config, store)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        header = {"X-Remote-User": "path1"}
        direct = httpx.Client(base_url=base, timeout=30)
        assert direct.get("/api/me", headers=header).status_code == 401, "not from the proxy: header ignored"
        proxied = httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.5"))
        me = proxied.get("/api/me", headers=header)
        assert me.status_code == 200 and me.json()["name"] == "path1" and me.json()["role"] == "pathologist"
        assert "oa_session" in me.cookies, "the proxy's user gets a session (and with it a CSRF token)"
        stranger = httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.5"))
        assert stranger.get("/api/me", headers={"X-Remote-User": "nobody"}).status_code == 401
        page = proxied.get("/", headers=header)
        assert page.status_code == 200 and "path1 (pathologist)" in page.text
    finally:
        server.stop()
        store.close()
