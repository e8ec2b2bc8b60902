"""The MR case's API on a running daemon that analysed a generated series with the real mri-tumour pipeline:
the volume, slices with the lesion outlined where the generator put it, window/level, lesion decisions and their
counts, the note, and who may do what."""

from __future__ import annotations

import html
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from pipelines.models.site_validation import NOT_VALIDATED, SiteValidation, write_record
from tests.support.mr_case import MRCase, analysed_mr_case, csrf_of, signed_in


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MRCase]:
    with analysed_mr_case(tmp_path_factory.mktemp("mr-case")) as analysed:
        yield analysed


@pytest.fixture(scope="module")
def rita(case: MRCase) -> Iterator[httpx.Client]:
    with signed_in(case.base_url, "rita") as client:
        yield client


def png(answer: httpx.Response) -> npt.NDArray[np.uint8]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def the_true_lesion(case: MRCase, volume: dict[str, Any]) -> dict[str, Any]:
    """The found lesion nearest to where the generator put its lesion (the segmenter may find more)."""
    truth = np.array(case.series.lesions[0].centre_ijk)
    return min(volume["lesions"], key=lambda lesion: float(np.linalg.norm(np.array(lesion["centre_voxel"]) - truth)))


def test_the_volume_has_the_series_slices_and_the_lesions_where_the_generator_put_them(case: MRCase,
                                                                                      rita: httpx.Client) -> None:
    volume = rita.get(f"/api/cases/{case.job_id}/volume").json()
    assert (volume["slices"], volume["rows"], volume["columns"]) == (24, 128, 128)
    assert volume["spacing_mm"] == [2.8, 2.8, 4.0] and volume["outlines"] is True
    assert volume["window"]["width"] > 0 and volume["window"]["source"] == "percentiles"
    assert [lesion["index"] for lesion in volume["lesions"]] == [les["index"] for les in case.summary["lesions"]]
    lesion = the_true_lesion(case, volume)
    k, row, column = case.series.lesions[0].centre_ijk
    assert lesion["slices"][0] <= round(k) <= lesion["slices"][1]
    assert np.allclose(lesion["centre_voxel"], (k, row, column), atol=2.0)


def test_a_slice_through_the_lesion_shows_its_outline_there_and_a_far_slice_none(case: MRCase,
                                                                                 rita: httpx.Client) -> None:
    volume = rita.get(f"/api/cases/{case.job_id}/volume").json()
    lesion = the_true_lesion(case, volume)
    colour = hex_rgb(lesion["colour"])
    truth = case.series.lesions[0]
    k, row, column = truth.centre_ijk
    through = png(rita.get(f"/api/cases/{case.job_id}/slices/{round(k)}.png"))
    drawn = np.argwhere(np.all(through == colour, axis=2))
    assert len(drawn) > 8
    assert np.linalg.norm(drawn.mean(axis=0) - (row, column)) < 3.0  # an outline around the lesion's centre
    assert np.linalg.norm(drawn - (row, column), axis=1).max() < 2 * truth.radius_mm / 2.8 + 3
    far = 0 if k > 12 else 23
    assert not any(first <= far <= last for first, last in (les["slices"] for les in volume["lesions"]))
    assert not np.all(png(rita.get(f"/api/cases/{case.job_id}/slices/{far}.png")) == colour, axis=2).any()
    coronal = png(rita.get(f"/api/cases/{case.job_id}/slices/{round(row)}.png?axis=1"))
    assert coronal.shape[:2] == (round(24 * 4.0 / 2.8), 128)  # slices stretched to square millimetres
    drawn = np.argwhere(np.all(coronal == colour, axis=2))
    assert len(drawn) > 8 and abs(drawn[:, 1].mean() - column) < 3.0
    assert abs(drawn[:, 0].mean() - (23.5 - k) * 4.0 / 2.8) < 3 * 4.0 / 2.8  # superior up: the last slice on top
    plain = png(rita.get(f"/api/cases/{case.job_id}/slices/{round(k)}.png?outlines=0"))
    assert not np.all(plain == colour, axis=2).any() and np.all(plain[..., 0] == plain[..., 1])


def test_window_and_level_change_the_pixels(case: MRCase, rita: httpx.Client) -> None:
    volume = rita.get(f"/api/cases/{case.job_id}/volume").json()
    centre, width = volume["window"]["center"], volume["window"]["width"]
    k = round(case.series.lesions[0].centre_ijk[0])
    default = png(rita.get(f"/api/cases/{case.job_id}/slices/{k}.png?outlines=0"))
    same = png(rita.get(f"/api/cases/{case.job_id}/slices/{k}.png?outlines=0&center={centre}&width={width}"))
    assert np.array_equal(default, same)
    narrow = png(rita.get(f"/api/cases/{case.job_id}/slices/{k}.png?outlines=0&center={centre}&width={width / 5}"))
    higher = png(rita.get(f"/api/cases/{case.job_id}/slices/{k}.png?outlines=0&center={centre + width / 2}"
                          f"&width={width}"))
    assert (narrow == 255).sum() > (default == 255).sum() and (narrow == 0).sum() > (default == 0).sum()
    assert higher.mean() < default.mean()  # a higher level darkens
    for query in ("width=0", "width=-3", "center=nan", "center=1e99"):
        assert rita.get(f"/api/cases/{case.job_id}/slices/{k}.png?{query}").status_code == 422, query
    assert rita.get(f"/api/cases/{case.job_id}/slices/24.png").status_code == 404
    assert rita.get(f"/api/cases/{case.job_id}/slices/-1.png").status_code == 404


def test_lesion_decisions_change_the_counts(case: MRCase, rita: httpx.Client) -> None:
    api = f"/api/cases/{case.job_id}"
    headers = {"X-CSRF-Token": csrf_of(rita)}
    lesions = case.summary["lesions"]
    opened = rita.get(api).json()
    ai_malignant = sum(1 for les in lesions if les["label"] == "malignant")
    assert opened["counts"] == {"ai": {"malignant": ai_malignant, "benign": len(lesions) - ai_malignant},
                                "result": {"malignant": ai_malignant, "benign": len(lesions) - ai_malignant},
                                "accepted": 0, "rejected": 0, "undecided": len(lesions), "malignant": ai_malignant}
    first = lesions[0]["index"]
    rejected = rita.post(f"{api}/decisions", headers=headers,
                         json={"target": f"l:{first}", "decision": "rejected", "label": None})
    assert rejected.status_code == 200, rejected.text
    counts = rejected.json()["counts"]
    assert (counts["rejected"], counts["undecided"]) == (1, len(lesions) - 1)
    assert counts["malignant"] == ai_malignant - (lesions[0]["label"] == "malignant")
    confirmed = rita.post(f"{api}/decisions", headers=headers,
                          json={"target": f"l:{first}", "decision": "confirmed", "label": "malignant"}).json()
    assert confirmed["counts"]["accepted"] == 1 and confirmed["counts"]["rejected"] == 0
    assert confirmed["counts"]["malignant"] == ai_malignant + (lesions[0]["label"] != "malignant")
    assert confirmed["decisions"][0]["target"] == f"l:{first}" and confirmed["decisions"][0]["by"] == "rita"
    assert rita.get(api).json()["counts"] == confirmed["counts"]
    for wrong in ({"target": "d:0", "decision": "rejected"}, {"target": "l:999", "decision": "rejected"},
                  {"target": f"l:{first}", "decision": "confirmed", "label": "CTC"}):
        assert rita.post(f"{api}/decisions", headers=headers, json=wrong).status_code == 422, wrong
    undone = rita.post(f"{api}/decisions", headers=headers, json={"target": f"l:{first}", "decision": None}).json()
    assert undone["counts"]["undecided"] == len(lesions) and undone["decisions"] == []


def test_the_note_is_kept_on_the_review(case: MRCase, rita: httpx.Client) -> None:
    api = f"/api/cases/{case.job_id}"
    saved = rita.post(f"{api}/note", headers={"X-CSRF-Token": csrf_of(rita)}, json={"note": " follow up in 3 months "})
    assert saved.status_code == 200 and saved.json()["note"] == "follow up in 3 months"
    assert rita.get(api).json()["review"]["note"] == "follow up in 3 months"
    too_long = rita.post(f"{api}/note", headers={"X-CSRF-Token": csrf_of(rita)}, json={"note": "x" * 4001})
    assert too_long.status_code == 422


def test_a_pathologist_and_requests_without_csrf_are_refused(case: MRCase, rita: httpx.Client) -> None:
    api = f"/api/cases/{case.job_id}"
    with signed_in(case.base_url, "paul") as paul:
        headers = {"X-CSRF-Token": csrf_of(paul)}
        for path in ("/volume", "/slices/3.png", ""):
            assert paul.get(api + path).status_code == 403, path
        assert paul.post(f"{api}/decisions", headers=headers,
                         json={"target": "l:1", "decision": "rejected"}).status_code == 403
        assert paul.post(f"{api}/note", headers=headers, json={"note": "mine"}).status_code == 403
    assert rita.post(f"{api}/decisions", json={"target": "l:1", "decision": "rejected"}).status_code == 403
    assert rita.post(f"{api}/note", json={"note": "no token"}).status_code == 403
    with httpx.Client(base_url=case.base_url) as nobody:
        assert nobody.get(f"{api}/volume").status_code == 401
        assert nobody.get(f"{api}/slices/3.png").status_code == 401


def test_a_result_of_unvalidated_models_is_badged_until_the_lab_accepts_them(case: MRCase,
                                                                             rita: httpx.Client) -> None:
    def row() -> dict[str, Any]:
        listed = rita.get("/api/cases").json()["cases"]
        return next(c for c in listed if c["job_id"] == case.job_id)

    mark = row()["validation_mark"]
    assert isinstance(mark, str) and mark.startswith(f"{NOT_VALIDATED}; trained on generated data")
    assert rita.get(f"/api/cases/{case.job_id}").json()["validation_mark"] == mark
    page = rita.get(f"/cases/{case.job_id}").text
    assert f'class="flag unvalidated" title="{html.escape(mark)}"' in page
    models = json.loads((case.result_path / "result.json").read_text())["models"]
    records = [write_record(case.daemon.data_dir, SiteValidation(
        model=m["name"], version=m["version"], sha256=m["sha256"], accepted_by="dr-lab",
        accepted_at="2026-12-07T23:00:00Z", report="/srv/evaluations/mri.html", cases=32)) for m in models]
    try:  # the worklist tells what is true of the weights now
        assert row()["validation_mark"] is None
        assert rita.get(f"/api/cases/{case.job_id}").json()["validation_mark"] is None
        assert "flag unvalidated" not in rita.get(f"/cases/{case.job_id}").text
    finally:
        for record in records:
            record.unlink()
    assert row()["validation_mark"] == mark
