"""The admin page in a real headless Chromium: an admin signs in, opens /admin from the header's link, sees the
failed job, the slide waiting for context and the review statistics, and retries the failed job: its row goes and
the store has it queued again. A screenshot of the page is saved under the test's folder."""

from __future__ import annotations

from pathlib import Path

from agent.records import JobStatus
from agent.store import Store
from tests.integration.test_web_admin import seed
from tests.support.browser import chromium, page_of, sign_in
from tests.support.waiting import wait_for
from tests.support.web_site import PASSWORD, served, store_with_accounts


def test_an_admin_retries_a_failed_job_from_the_admin_page(tmp_path: Path) -> None:
    with store_with_accounts(tmp_path) as store, served(store) as server:
        retried_in_the_browser(store, server, tmp_path)


def retried_in_the_browser(store: Store, server: str, tmp_path: Path) -> None:
    seeded = seed(store, tmp_path)
    with chromium() as browser, page_of(browser) as page:
        sign_in(page, server, "root", PASSWORD)
        page.click("#admin-link")
        page.wait_for_url(server + "/admin")
        page.wait_for_selector("body[data-loaded]")
        row = page.locator(f'tr.failed-row[data-job="{seeded.failed_job}"]')
        assert "cannot open slide: not a TIFF file" in row.inner_text()
        assert page.locator(f'tr.no-context-row[data-job="{seeded.unsent_job}"] form.context-form').count() == 1
        assert "ctc-yolo@1.2" in page.locator("#stats").inner_text()
        page.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
        row.locator("button.retry").click()
        page.wait_for_selector(f'tr.failed-row[data-job="{seeded.failed_job}"]', state="detached")
        assert "queued again" in page.locator("#message").inner_text()
        waiting = page.locator(f'tr.no-context-row[data-job="{seeded.unsent_job}"]')
        waiting.locator('input[name="patient_id"]').fill("P-7")
        waiting.locator('input[name="accession_number"]').fill("ACC-1")
        waiting.locator('button[type="submit"]').click()
        page.wait_for_selector(f'tr.no-context-row[data-job="{seeded.unsent_job}"] form', state="detached")
        assert "context attached: queued" in waiting.inner_text()
        page.screenshot(path=str(tmp_path / "admin-retried.png"), full_page=True)
    assert wait_for(lambda: store.get_job(seeded.failed_job).status is JobStatus.QUEUED, what="job queued again")
    assert store.get_input(seeded.slide_input).attrs["context"] == {"patient_id": "P-7", "accession_number": "ACC-1"}
    assert store.get_job(seeded.unsent_job).status is JobStatus.QUEUED
    assert (tmp_path / "admin.png").stat().st_size > 0
