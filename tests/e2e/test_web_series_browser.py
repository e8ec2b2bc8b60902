"""A radiologist reviews an MR case in a real headless Chromium: from the worklist to the case, slices scrolled with
the keyboard, a lesion rejected with R, a note saved; the page's counts follow and a screenshot is kept. Then the
case is signed off and the verified SR (the radiologist as verifying observer, the AI's SR its predecessor) reaches
Orthanc through the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from tests.support.browser import chromium, page_of, sign_in
from tests.support.mr_case import PASSWORD, analysed_mr_case
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for


def test_a_radiologist_scrolls_rejects_a_lesion_saves_a_note_and_signs_off(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc").start()
    pacs = {"destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                              "port": orthanc.dicom_port}]}
    try:
        _review(tmp_path, pacs, orthanc)
    finally:
        orthanc.stop()


def _review(tmp_path: Path, pacs: dict[str, Any], orthanc: Orthanc) -> None:
    with analysed_mr_case(tmp_path / "case", pacs) as case, chromium() as browser, page_of(browser) as page:
        lesions = case.summary["lesions"]
        assert lesions, "the pipeline found no lesion to review"
        sign_in(page, case.base_url, "rita", PASSWORD)
        page.click(f'tr.case-row[data-job="{case.job_id}"] a')
        page.wait_for_url(f"{case.base_url}/cases/{case.job_id}")
        page.wait_for_function("document.body.dataset.loaded === '1'")
        assert page.locator("#lesions tr").count() == len(lesions)
        assert page.text_content("#n-undecided") == str(len(lesions))
        first = int(page.evaluate("document.body.dataset.slice"))
        extent = page.text_content("#lesions tr:first-child td:nth-child(5)") or ""
        low, high = (int(v) - 1 for v in extent.split("–"))
        assert low <= first <= high  # the page opens on the first lesion's middle slice
        step = 1 if first < 12 else -1
        key = "ArrowDown" if step == 1 else "ArrowUp"
        page.keyboard.press(key)
        page.keyboard.press(key)
        page.wait_for_function(f"document.body.dataset.slice === '{first + 2 * step}'")
        page.keyboard.press("k" if step == 1 else "j")
        page.wait_for_function(f"document.body.dataset.slice === '{first + step}'")
        assert page.input_value("#slice") == str(first + step)

        page.keyboard.press("r")
        page.wait_for_function("document.body.dataset.saved === '1'")
        malignant_left = sum(1 for les in lesions[1:] if les["label"] == "malignant")
        assert page.text_content("#n-rejected") == "1"
        assert page.text_content("#n-accepted") == "0"
        assert page.text_content("#n-undecided") == str(len(lesions) - 1)
        assert page.text_content("#result-malignant") == str(malignant_left)
        assert "rejected" in (page.get_attribute("#lesions tr:first-child", "class") or "")

        page.fill("#note", "lesion 1 is a vessel; follow up the rest in 3 months")
        page.click("#save-note")
        page.wait_for_function("document.body.dataset.noteSaved === '1'")
        page.keyboard.press("v")  # the next plane: a reformat through the selected lesion
        page.wait_for_function("document.body.dataset.plane === 'coronal'")
        assert page.input_value("#plane") == "1" and page.get_attribute("#slice", "max") == "127"
        shot = tmp_path / "mr-case.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        page.reload()
        page.wait_for_function("document.body.dataset.loaded === '1'")
        assert page.input_value("#note") == "lesion 1 is a vessel; follow up the rest in 3 months"
        assert page.text_content("#n-rejected") == "1"

        ai_sr = _sr_uid(case.result_path / "sr.dcm")
        page.click("#sign-off")
        page.wait_for_function("document.body.dataset.review === 'signed_off'")
        assert "Signed off by rita" in page.inner_text("#signed")
        assert page.locator("#sign-off").is_hidden() and page.locator("#reopen").is_visible()
        page.screenshot(path=str(tmp_path / "mr-case-signed.png"), full_page=True)

        (sr,) = wait_for(orthanc.verified_srs, 120, interval=0.5, what="the verified SR in Orthanc")
        assert sr["VerifyingObserverSequence"][0]["VerifyingObserverName"] == "rita"
        predecessors = [sop["ReferencedSOPInstanceUID"] for study in sr["PredecessorDocumentsSequence"]
                        for series in study["ReferencedSeriesSequence"] for sop in series["ReferencedSOPSequence"]]
        assert predecessors == [ai_sr]


def _sr_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)

