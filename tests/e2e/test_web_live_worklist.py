"""The worklist in a real headless Chromium stays current without a reload: a case recorded while the page is
open appears in it, a filter narrows it, and cases of one accession are kept together under a header row."""

from __future__ import annotations

import time
from pathlib import Path

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.store import Store, users
from agent.web.server import WebServer
from pipelines.synthetic.slides import SlideSpec
from tests.support.browser import chromium, page_of, sign_in
from tests.support.web_cases import seed_slide_case

PASSWORD = "live-worklist-pw"


def test_a_new_case_appears_without_a_reload(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    users.add_user(store.engine, "path1", "pathologist", hash_password(PASSWORD), time.time())
    first = seed_slide_case(store, tmp_path / "a", "first.tiff", SlideSpec(width=1024, height=1024, ctc=2, ctm=0,
                                                                             seed=11))
    server = WebServer(Settings(data_dir=tmp_path, web=WebSettings(port=0)), store)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with chromium() as browser, page_of(browser) as page:
            sign_in(page, base, "path1", PASSWORD)
            page.wait_for_selector("body[data-loaded]")
            assert page.locator("tr.case-row").count() == 1
            page.evaluate("window.stillThisPage = true")
            second = seed_slide_case(store, tmp_path / "b", "second.tiff",
                                     SlideSpec(width=1024, height=1024, ctc=1, ctm=0, seed=12))
            page.wait_for_selector(f'tr.case-row[data-job="{second}"]', timeout=20_000)
            assert page.evaluate("window.stillThisPage") is True, "the row came without a reload"
            assert page.inner_text("#total") == "2"

            page.fill('input[name="q"]', "first")
            page.wait_for_function("document.querySelectorAll('tr.case-row').length === 1")
            assert page.locator("tr.case-row").first.get_attribute("data-job") == str(first)
            page.fill('input[name="q"]', "")
            page.wait_for_function("document.querySelectorAll('tr.case-row').length === 2")

            for job in (first, second):  # the same accession: one group
                store.set_context(store.get_job(job).input_id, {"accession_number": "ACC-LIVE",
                                                                "patient_id": "P-LIVE"}, "test")
            page.wait_for_selector("tr.group-row", timeout=20_000)
            assert "accession ACC-LIVE · 2 cases" in page.inner_text("tr.group-row")
            page.screenshot(path=str(tmp_path / "worklist-live.png"))
    finally:
        server.stop()
        store.close()
