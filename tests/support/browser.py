"""A real headless Chromium (Debian's, driven by Playwright with the system executable: nothing is downloaded)
for the web worklist's tests, and the screenshots they save."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise RuntimeError("Debian's chromium is not installed (make system-deps installs it)")
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_of(browser: Browser, shots: Path | None = None) -> Iterator[Page]:
    """A page in a fresh context (its own cookies), 1400×900; its console errors fail nothing but are kept."""
    # bypass_csp: the pages forbid eval, which Playwright's wait_for_function needs for its own predicates
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def sign_in(page: Page, base_url: str, name: str, password: str) -> None:
    page.goto(base_url + "/login")
    page.fill('input[name="name"]', name)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(base_url + "/")
