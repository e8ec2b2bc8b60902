"""The admin page's API on a real web server (uvicorn on a free port, in-process) over a real SQLite store: failed
jobs and their retry, slides waiting for patient context and attaching it, review statistics, the accounts; only
admins get any of it, and every admin action is in the web audit trail."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.records import InputKind, JobStatus
from agent.review_records import DecisionKind
from agent.store import Store
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.support.web_site import PASSWORD, served, store_with_accounts

NO_CONTEXT = ("no patient/study context (patient ID and accession number or study UID missing from the slide's "
              "filename mapping and sidecar): DICOM objects not produced, reports only")
SLIDE_MODELS = [{"name": "ctc-yolo", "version": "1.2"}]


@dataclass
class Seeded:
    failed_job: int
    unsent_job: int
    slide_input: int
    reviewed_job: int


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with store_with_accounts(tmp_path) as s:
        yield s


@pytest.fixture
def server(store: Store) -> Iterator[str]:
    with served(store) as url:
        yield url


def _ran(store: Store, input_id: int, pipeline: str) -> int:
    job = store.enqueue(input_id, pipeline, "1")[0].id
    claimed = store.claim()
    assert claimed is not None and claimed.id == job
    return job


def seed(store: Store, tmp_path: Path) -> Seeded:
    """A slide whose job failed for good, a real generated slide whose result was kept for lack of context, and a
    signed-off slide case with decisions."""
    broken, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "broken.svs", "f-broken",
                                        {"file_name": "broken.svs"})
    failed_job = _ran(store, broken.id, "wsi-ctc")
    store.fail(failed_job, "cannot open slide: not a TIFF file")
    path = tmp_path / "slides" / "S-1.tiff"
    path.parent.mkdir()
    write_slide(path, SlideSpec(width=1024, height=1024, ctc=2, ctm=0, tile=256))
    slide, _ = store.upsert_file_input(InputKind.SLIDE, path, "f-slide", {"file_name": path.name})
    unsent_job = _ran(store, slide.id, "wsi-ctc")
    store.succeed(unsent_job, tmp_path / "results" / str(unsent_job), {"counts": {"CTC": 2, "CTM": 0}}, SLIDE_MODELS,
                  unsent_reason=NO_CONTEXT)
    reviewed, _ = store.upsert_file_input(InputKind.SLIDE, tmp_path / "r.svs", "f-r", {"file_name": "r.svs"})
    reviewed_job = _ran(store, reviewed.id, "wsi-ctc")
    detections = [{"class": c, "confidence": 0.9, "l0_box": [0, 0, 10, 10]} for c in ("CTC", "CTC", "CTM", "CTC")]
    store.succeed(reviewed_job, tmp_path / "results" / str(reviewed_job),
                  {"counts": {"CTC": 3, "CTM": 1}, "detections": detections}, SLIDE_MODELS)
    reviewer = store.user_by_name("path")
    assert reviewer is not None
    review = store.start_review(reviewed_job, reviewer.id, time.time())
    for target, kind, label in (("d:0", "confirmed", "CTC"), ("d:1", "rejected", None), ("d:2", "confirmed", "CTC"),
                                ("a:1", "added", "CTC")):
        store.decide(review.id, target, DecisionKind(kind), label, [1, 1, 5, 5] if kind == "added" else None,
                     "ctc-yolo@1.2", reviewer.id, time.time())
    store.sign_off(review.id, reviewer.id, {}, None, time.time())
    return Seeded(failed_job, unsent_job, slide.id, reviewed_job)


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> Seeded:
    return seed(store, tmp_path)


@contextmanager
def signed_in(base: str, name: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """A client signed in as a browser is: the login form's CSRF field, the form posted, the API's CSRF token."""
    with httpx.Client(base_url=base, timeout=30) as client:
        yield _sign_in(client, name, password)


def _sign_in(client: httpx.Client, name: str, password: str) -> httpx.Client:
    form = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None, form.text
    answer = client.post("/login", data={"name": name, "password": password, "csrf": token.group(1), "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf"]
    return client


def audit_actions(store: Store) -> list[tuple[str | None, str, int | None]]:
    return [(e.user_name, e.action, e.job_id) for e in store.web_audit_since(0)]


def test_only_admins_reach_the_admin_routes(server: str, seeded: Seeded, store: Store) -> None:
    routes = [("GET", "/admin"), ("GET", "/api/admin/failed"), ("GET", "/api/admin/no-context"),
              ("GET", "/api/admin/review-stats"), ("GET", "/api/admin/users"),
              ("POST", f"/api/admin/jobs/{seeded.failed_job}/retry"),
              ("POST", f"/api/admin/inputs/{seeded.slide_input}/context"), ("POST", "/api/admin/users"),
              ("POST", "/api/admin/users/path/disable")]
    body = {"patient_id": "P1", "accession_number": "A1", "name": "mallory", "role": "admin", "password": "x"}
    with httpx.Client(base_url=server, timeout=30) as anonymous:
        for method, route in routes:
            answer = anonymous.request(method, route, json=body if method == "POST" else None)
            expected = 303 if route == "/admin" else 401  # a page sends to the login
            assert answer.status_code == expected, (method, route, answer.text)
    for name in ("path", "rad", "view"):
        with signed_in(server, name) as client:
            for method, route in routes:
                answer = client.request(method, route, json=body if method == "POST" else None)
                assert answer.status_code == 403, (name, method, route, answer.text)
            assert "/admin" not in client.get("/").text  # no link to the page either
    assert store.get_job(seeded.failed_job).status is JobStatus.FAILED  # nothing changed
    assert "context" not in store.get_input(seeded.slide_input).attrs
    assert store.user_by_name("mallory") is None and not store.user_by_name("path").disabled  # type: ignore[union-attr]
    refused = [a for a in audit_actions(store) if a[1] == "refused"]
    assert {a[0] for a in refused} == {"path", "rad", "view"} and len(refused) == 3 * len(routes)


def test_an_admin_sees_the_failed_job_and_retries_it(server: str, seeded: Seeded, store: Store) -> None:
    with signed_in(server, "root") as client:
        assert 'href="/admin"' in client.get("/").text
        page = client.get("/admin")
        assert page.status_code == 200 and 'src="/static/admin.js"' in page.text
        listed = client.get("/api/admin/failed").json()
        assert listed["total"] == 1
        [job] = listed["jobs"]
        assert (job["job_id"], job["name"], job["pipeline"], job["attempts"], job["reason"]) == (
            seeded.failed_job, "broken.svs", "wsi-ctc", 1, "cannot open slide: not a TIFF file")
        assert job["finished_at"] is not None
        assert client.post(f"/api/admin/jobs/{seeded.failed_job}/retry").json() == {
            "job_id": seeded.failed_job, "status": "queued"}
        assert store.get_job(seeded.failed_job).status is JobStatus.QUEUED
        assert store.get_job(seeded.failed_job).attempts == 0
        assert client.get("/api/admin/failed").json()["jobs"] == []
        again = client.post(f"/api/admin/jobs/{seeded.failed_job}/retry")  # queued: nothing to retry
        assert again.status_code == 409 and "only failed or cancelled jobs" in again.json()["detail"]
        assert client.post("/api/admin/jobs/999999/retry").status_code == 404
        no_csrf = client.post(f"/api/admin/jobs/{seeded.reviewed_job}/retry", headers={"X-CSRF-Token": "wrong"})
        assert no_csrf.status_code == 403
    actions = audit_actions(store)
    assert ("root", "retry", seeded.failed_job) in actions and ("root", "retry-refused", seeded.failed_job) in actions


def test_bad_context_is_refused_with_the_reasons(server: str, seeded: Seeded, store: Store) -> None:
    with signed_in(server, "root") as client:
        [slide] = client.get("/api/admin/no-context").json()["slides"]
        assert (slide["job_id"], slide["input_id"], slide["name"], slide["reason"], slide["waiting"]) == (
            seeded.unsent_job, seeded.slide_input, "S-1.tiff", NO_CONTEXT, True)
        url = f"/api/admin/inputs/{seeded.slide_input}/context"
        missing = client.post(url, json={"patient_id": "P-7"})
        assert missing.status_code == 422
        assert "accession number or study UID missing" in missing.json()["detail"][0]
        too_long = client.post(url, json={"patient_id": "P-7", "accession_number": "A" * 17,
                                          "patient_birth_date": "yesterday"})
        assert too_long.status_code == 422
        reasons = " ".join(too_long.json()["detail"])
        assert "accession_number ignored" in reasons and "patient_birth_date ignored" in reasons
        unknown = client.post(url, json={"patient_id": "P-7", "accession_number": "A1", "shoe_size": "42"})
        assert unknown.status_code == 422  # a field no sidecar knows
        assert client.post(f"/api/admin/inputs/{seeded.slide_input + 1000}/context",
                           json={"patient_id": "P-7", "accession_number": "A1"}).status_code == 404
    assert "context" not in store.get_input(seeded.slide_input).attrs
    assert store.get_job(seeded.unsent_job).status is JobStatus.SUCCEEDED


def test_attaching_context_stores_it_and_queues_the_job_again(server: str, seeded: Seeded, store: Store) -> None:
    with signed_in(server, "root") as client:
        answer = client.post(f"/api/admin/inputs/{seeded.slide_input}/context",
                             json={"patient_id": "P-7", "accession_number": "ACC-1", "patient_name": "Doe^Jane"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["requeued"] == [seeded.unsent_job]
        assert "makes its DICOM objects" in answer.json()["detail"]
        inp = store.get_input(seeded.slide_input)
        assert inp.attrs["context"] == {"patient_id": "P-7", "accession_number": "ACC-1", "patient_name": "Doe^Jane"}
        assert inp.attrs["context_source"] == "web"
        job = store.get_job(seeded.unsent_job)
        assert job.status is JobStatus.QUEUED  # the executor takes it again and makes the objects with the context
        [listed] = client.get("/api/admin/no-context").json()["slides"]
        assert (listed["job_id"], listed["waiting"], listed["status"]) == (seeded.unsent_job, False, "queued")
        assert listed["context_fields"] == ["accession_number", "patient_id", "patient_name"]
        twice = client.post(f"/api/admin/inputs/{seeded.slide_input}/context",
                            json={"patient_id": "P-7", "accession_number": "ACC-1"})
        assert twice.status_code == 409  # no result waits for context any more
    [event] = [e for e in store.web_audit_since(0) if e.action == "attach-context"]
    assert (event.user_name, event.job_id) == ("root", seeded.unsent_job)
    assert "P-7" not in (event.detail or "") and "Doe" not in (event.detail or "")  # field names only


def test_an_admin_adds_and_disables_accounts(server: str, store: Store) -> None:
    with signed_in(server, "root") as client:
        added = client.post("/api/admin/users", json={"name": "carol", "role": "radiologist", "password": "s3cret"})
        assert added.status_code == 201 and added.json()["role"] == "radiologist"
        assert "s3cret" not in added.text and "argon2" not in added.text
        assert client.post("/api/admin/users", json={"name": "carol", "role": "viewer", "password": "x"}
                           ).status_code == 409
        assert client.post("/api/admin/users", json={"name": " bad", "role": "viewer", "password": "x"}
                           ).status_code == 422
        assert client.post("/api/admin/users", json={"name": "dave", "role": "surgeon", "password": "x"}
                           ).status_code == 422
        assert client.post("/api/admin/users", json={"name": "dave", "role": "viewer", "password": ""}
                           ).status_code == 422
        long = client.post("/api/admin/users", json={"name": "dave", "role": "viewer", "password": "pw" * 600})
        assert long.status_code == 422 and "at most 1024 characters" in long.text and "pwpw" not in long.text
        with signed_in(server, "carol", "s3cret") as carol:  # the new account signs in with its password
            assert carol.get("/api/me").json()["role"] == "radiologist"
            assert client.post("/api/admin/users/carol/disable").json()["disabled_at"] is not None
            assert carol.get("/api/me").status_code == 401  # its session ended
        assert client.post("/api/admin/users/root/disable").status_code == 409  # not one's own
        assert client.post("/api/admin/users/nobody/disable").status_code == 404
    carol_account = store.user_by_name("carol")
    assert carol_account is not None and carol_account.disabled
    assert store.user_by_name("dave") is None
    actions = [(e.user_name, e.action, e.detail) for e in store.web_audit_since(0) if e.action.startswith("user-")]
    assert actions == [("root", "user-add", "carol as radiologist"), ("root", "user-disable", "carol")]


def test_review_statistics_and_accounts(server: str, seeded: Seeded) -> None:
    with signed_in(server, "root") as client:
        [stats] = client.get("/api/admin/review-stats").json()["models"]
        assert {k: stats[k] for k in ("pipeline", "kind", "model_version", "cases", "shown", "confirmed", "rejected",
                                      "reclassed", "added")} == {
            "pipeline": "wsi-ctc", "kind": "slide", "model_version": "ctc-yolo@1.2", "cases": 1, "shown": 4,
            "confirmed": 2, "rejected": 1, "reclassed": 1, "added": 1}
        assert stats["precision"] == pytest.approx(0.75) and stats["added_per_case"] == 1.0
        accounts = client.get("/api/admin/users")
        assert [(u["name"], u["role"]) for u in accounts.json()["users"]] == [
            ("path", "pathologist"), ("rad", "radiologist"), ("root", "admin"), ("view", "viewer")]
        assert "argon2" not in accounts.text
