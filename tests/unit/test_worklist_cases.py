"""The worklist's query (agent.store.cases) and what a case shows (agent.web.case_views), on a real SQLite store
with real generated slides: ordering, filters, paging, review states, corrected counts, progress text; and the
login limiter and the tile server."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.config import Priority
from agent.records import InputKind
from agent.review_records import DecisionKind, Role
from agent.store import Store, reviews, users
from agent.store.cases import CaseFilter, get_case, list_cases
from agent.web.auth import LoginLimiter
from agent.web.case_views import corrected_result, may_decide, may_see, row_json, slide_counts, status_text
from agent.web.tiles import TileError, TileServer
from pipelines.synthetic.slides import SlideSpec
from tests.conftest import shared
from tests.support.web_cases import seed_slide_case


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'store.db'}")


def _queued(store: Store, name: str, priority: Priority = Priority.ROUTINE) -> int:
    inp, _ = store.upsert_file_input(InputKind.SLIDE, Path("/nowhere") / name, f"fp-{name}", {"file_name": name})
    job, _ = store.enqueue(inp.id, "wsi-ctc", "1.0.0", priority=priority)
    return job.id


def test_cases_come_most_pressing_first_and_filter_in_sql(store: Store, tmp_path: Path) -> None:
    few = seed_slide_case(store, tmp_path / "a", "few.tiff", SlideSpec(width=1024, height=1024, ctc=1, ctm=0,
                                                                         seed=1))
    many = seed_slide_case(store, tmp_path / "b", "many.tiff", SlideSpec(width=1024, height=1024, ctc=6, ctm=1,
                                                                           seed=2))
    waiting = _queued(store, "waiting.tiff", Priority.STAT)
    rows, total = list_cases(store.engine, CaseFilter())
    assert total == 3
    assert [r.job_id for r in rows] == [many, few, waiting], "finished first, then by the AI's score"
    assert rows[2].status == "queued"
    assert [r.job_id for r in list_cases(store.engine, CaseFilter(status="queued"))[0]] == [waiting]
    assert list_cases(store.engine, CaseFilter(search="MANY"))[1] == 1
    assert list_cases(store.engine, CaseFilter(search="%"))[1] == 0, "LIKE wildcards are searched as text"
    assert list_cases(store.engine, CaseFilter(pipelines=["mri-tumour"]))[1] == 0
    page, total = list_cases(store.engine, CaseFilter(), offset=1, limit=1)
    assert total == 3 and [r.job_id for r in page] == [few]
    assert [r.job_id for r in list_cases(store.engine, CaseFilter(), sort="received")[0]] == [waiting, many, few]
    assert [r.job_id for r in list_cases(store.engine, CaseFilter(), sort="analysed")[0]][-1] == waiting
    since = get_case(store.engine, many).created_at  # type: ignore[union-attr]
    assert {r.job_id for r in list_cases(store.engine, CaseFilter(since=since))[0]} == {many, waiting}
    with pytest.raises(ValueError, match="unknown sort"):
        list_cases(store.engine, CaseFilter(), sort="alphabetical")


def test_review_states_reach_the_worklist(store: Store, tmp_path: Path) -> None:
    job = seed_slide_case(store, tmp_path / "s", "s.tiff", SlideSpec(width=1024, height=1024, ctc=3, ctm=1, seed=3))
    reviewer = users.add_user(store.engine, "path1", Role.PATHOLOGIST, None, time.time())
    case = get_case(store.engine, job)
    assert case is not None and case.status == "new"
    review = reviews.start_review(store.engine, job, reviewer.id, time.time())
    reviews.decide(store.engine, review.id, "d:0", DecisionKind.REJECTED, None, None, "m@1", reviewer.id, time.time())
    assert [r.job_id for r in list_cases(store.engine, CaseFilter(status="in_review"))[0]] == [job]
    assert list_cases(store.engine, CaseFilter(reviewer="path1"))[1] == 1
    case = get_case(store.engine, job)
    assert case is not None
    decided = reviews.decisions(store.engine, review.id)
    corrected = corrected_result(case, decided)
    assert case.summary is not None
    assert len(corrected["detections"]) == len(case.summary["detections"]) - 1, "the rejected one is left out"
    reviews.sign_off(store.engine, review.id, reviewer.id, corrected, "ok", time.time())
    signed = get_case(store.engine, job)
    assert signed is not None and signed.status == "signed_off" and signed.signed_by == "path1"
    assert row_json(signed)["finding"].startswith(f"{corrected['counts']['CTC']} CTC, {corrected['counts']['CTM']} CTM")
    reviews.reopen_review(store.engine, job, reviewer.id, time.time())
    assert get_case(store.engine, job).status == "in_review"  # type: ignore[union-attr]


def test_counts_follow_the_reviewer() -> None:
    from agent.review_records import Decision

    found = [{"class": "CTC", "l0_box": [0, 0, 1, 1]}, {"class": "CTC", "l0_box": [2, 2, 3, 3]},
             {"class": "CTM", "l0_box": [4, 4, 5, 5]}]

    def decision(target: str, kind: DecisionKind, label: str | None = None) -> Decision:
        return Decision(target, kind, label, [9, 9, 10, 10] if kind is DecisionKind.ADDED else None, "m@1", 1,
                        "path1", 0.0)

    counts = slide_counts(found, [decision("d:0", DecisionKind.REJECTED),
                                  decision("d:1", DecisionKind.CONFIRMED, "CTM"),
                                  decision("a:1", DecisionKind.ADDED, "CTC")])
    assert counts["ai"] == {"CTC": 2, "CTM": 1}
    assert counts["result"] == {"CTC": 1, "CTM": 2}
    assert (counts["confirmed"], counts["rejected"], counts["added"], counts["undecided"]) == (1, 1, 1, 1)


def test_roles_see_their_own_cases(store: Store, tmp_path: Path) -> None:
    job = seed_slide_case(store, tmp_path / "r", "r.tiff", SlideSpec(width=1024, height=1024, ctc=1, ctm=0, seed=4))
    case = get_case(store.engine, job)
    assert case is not None
    assert may_see(Role.PATHOLOGIST, case) and may_decide(Role.PATHOLOGIST, case)
    assert not may_see(Role.RADIOLOGIST, case)
    assert may_see(Role.VIEWER, case) and not may_decide(Role.VIEWER, case)
    assert may_decide(Role.ADMIN, case)


def test_a_running_job_reads_as_progress_with_an_estimate(store: Store) -> None:
    job = _queued(store, "big.tiff")
    claimed = store.claim(time.time(), owner="w")
    assert claimed is not None and claimed.id == job
    store.report_progress(job, 450, 1000, "tiles", claimed.started_at + 100)  # type: ignore[operator]
    case = get_case(store.engine, job)
    assert case is not None and case.status == "analysing"
    text = status_text(case, now=case.progress[3])
    assert text.startswith("analysing, 45 % (tiles 450/1000), about 2 min")


def test_failed_logins_lock_out_by_address_and_by_name_until_the_window_passes() -> None:
    limiter = LoginLimiter(attempts=3, window_s=60)
    for t in range(3):
        assert not limiter.blocked("address:a", "name:x", now=100 + t)
        limiter.failed("address:a", "name:x", now=100 + t)
    assert limiter.blocked("address:a", now=103) and limiter.blocked("name:x", now=103)
    assert not limiter.blocked("address:b", "name:y", now=103)
    assert not limiter.blocked("address:a", "name:x", now=161), "the window slid past the failures"
    limiter.failed("address:a", now=170)
    limiter.succeeded("address:a")
    assert not limiter.blocked("address:a", now=171)


def test_tiles_come_from_the_slide_and_are_bounded(tmp_path: Path, store: Store) -> None:
    job = seed_slide_case(store, tmp_path / "t", "t.tiff", SlideSpec(width=1024, height=1024, ctc=2, ctm=0, seed=6))
    case = get_case(store.engine, job)
    assert case is not None
    tiles = TileServer(open_slides=1, cache_bytes=64 * 1024)
    slide = Path(case.input_path)
    assert 'Width="1024"' in tiles.dzi(slide)
    top = tiles.tile(slide, 10, 0, 0)
    assert top[:2] == b"\xff\xd8", "a JPEG"
    assert tiles.tile(slide, 10, 0, 0) is top, "the second time from the cache"
    for col in range(4):
        tiles.tile(slide, 10, col, 0)
    assert tiles._cached <= 64 * 1024
    with pytest.raises(TileError):
        tiles.tile(slide, 10, 99, 0)
    with pytest.raises(TileError):
        tiles.tile(tmp_path / "missing.tiff", 0, 0, 0)
    box = case.summary["detections"][0]["l0_box"] if case.summary else [0, 0, 1, 1]
    assert tiles.crop(slide, tuple(box))[:2] == b"\xff\xd8"  # type: ignore[arg-type]
    tiles.close()


def test_a_fluorescence_crop_comes_channel_by_channel(tmp_path: Path, store: Store) -> None:
    job = seed_slide_case(store, tmp_path / "f", "f.tiff", SlideSpec(width=1024, height=1024, ctc=2, ctm=0, seed=7,
                                                                       mode="fluorescence"))
    case = get_case(store.engine, job)
    assert case is not None and case.summary is not None
    tiles = TileServer(open_slides=1, cache_bytes=0)
    box = tuple(case.summary["detections"][0]["l0_box"])
    slide = Path(case.input_path)
    crops = [Image.open(io.BytesIO(tiles.crop(slide, box, channel=c))) for c in (0, 1, 2)]  # type: ignore[arg-type]
    composite = Image.open(io.BytesIO(tiles.crop(slide, box))).convert("RGB")  # type: ignore[arg-type]
    for channel, crop in enumerate(crops):
        grey = np.asarray(crop.convert("RGB"), dtype=float)
        assert np.allclose(grey[..., 0], grey[..., 1], atol=3), "a channel is shown in grey"
        assert abs(grey[..., 0].mean() - np.asarray(composite, dtype=float)[..., channel].mean()) < 4
    assert len({round(float(np.asarray(c).mean())) for c in crops}) > 1, "the channels differ"


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "test3-DAPI-2-(387).ndpi", "dicom-boxes",
                                  "openslide-python_boxes.tiff"])
def test_vendor_slides_give_deep_zoom_tiles(name: str) -> None:
    """SVS, NDPI, a DICOM WSI series folder (any of its files opens the series) and a generic TIFF alike."""
    slide = shared(f"wsi/{name}")
    tiles = TileServer(open_slides=2, cache_bytes=0)
    width, height = tiles.dimensions(slide)
    assert f'Width="{width}"' in tiles.dzi(slide) and width > 0 and height > 0
    top = Image.open(io.BytesIO(tiles.tile(slide, 0, 0, 0)))
    assert top.size == (1, 1), "level 0 of Deep Zoom is one pixel"
    full = Image.open(io.BytesIO(tiles.tile(slide, _levels(width, height) - 1, 0, 0)))
    assert full.size[0] > 1 and np.asarray(full).std() > 0, "the full-resolution tile holds the image"
    tiles.close()


def _levels(width: int, height: int) -> int:
    return int(np.ceil(np.log2(max(width, height)))) + 1
