"""The worklist's JSON API fuzzed from its own OpenAPI document (schemathesis over a real server on a free port):
no request, however malformed, gets a 5xx; and no request changes state without a session — anonymous calls
are answered 401 and leave the review store as it was."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.store import Store, reviews, users
from agent.web.server import WebServer
from pipelines.synthetic.slides import SlideSpec
from tests.support.web_cases import seed_slide_case

PASSWORD = "fuzz-pathologist-pw"


@dataclass
class Served:
    base: str
    cookies: dict[str, str]
    csrf: str
    store: Store
    job_id: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("web-fuzz")
    store = Store.open(f"sqlite:///{root / 'store.db'}")
    job_id = seed_slide_case(store, root / "slides", "fuzz.tiff", SlideSpec(width=1024, height=1024, ctc=3, ctm=1,
                                                                             seed=5151))
    users.add_user(store.engine, "fuzzer", "pathologist", hash_password(PASSWORD), time.time())
    server = WebServer(Settings(data_dir=root, web=WebSettings(port=0, login_attempts=1000)), store)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"name": "fuzzer", "password": PASSWORD, "csrf": token.group(1)})
        csrf = client.get("/api/me").json()["csrf"]
        cookies = dict(client.cookies)
    try:
        yield Served(base, cookies, csrf, store, job_id)
    finally:
        server.stop()
        store.close()


def _cases(served: Served) -> SearchStrategy[schemathesis.Case]:
    """Requests for every operation of the API's own OpenAPI document: valid ones and malformed ones."""
    loaded = schemathesis.openapi.from_url(f"{served.base}/api/openapi.json")
    return st.one_of(loaded.as_strategy(GenerationMode.POSITIVE), loaded.as_strategy(GenerationMode.NEGATIVE))


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                    derandomize=True)


def test_no_request_makes_the_api_fail(served: Served) -> None:
    @fuzz(400)
    @given(case=_cases(served))
    def signed_in(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=served.base, cookies=served.cookies, headers={"X-CSRF-Token": served.csrf},
                               checks=[not_a_server_error])

    signed_in()


def test_no_request_without_a_session_is_served_or_changes_anything(served: Served) -> None:
    before = reviews.latest_review(served.store.engine, served.job_id)

    @fuzz(150)
    @given(case=_cases(served))
    def anonymous(case: schemathesis.Case) -> None:
        answer = case.call(base_url=served.base)
        assert answer.status_code in (400, 401, 422), f"{case.method} {case.formatted_path}: {answer.status_code}"

    anonymous()
    assert reviews.latest_review(served.store.engine, served.job_id) == before


def test_the_fuzzed_session_could_act(served: Served) -> None:
    """The fuzzing above ran with a working session: it did change the case (opened its review, at least)."""
    assert reviews.latest_review(served.store.engine, served.job_id) is not None
    assert httpx.get(f"{served.base}/api/me", cookies=served.cookies).status_code == 200
