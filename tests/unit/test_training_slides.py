"""The slide half of ``oncoagent export training-data`` (agent.training_slides): which cells a tile's labels
hold, where tiles go, and the split by slide. The real slides, trainers and store: test_training_export."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agent.review_records import Decision, DecisionKind
from agent.training_slides import Cell, SlideCase, assign_splits, reviewed_cells, tile_origins, tile_rows

NAMES = ("CTC", "CTM")


def _decision(target: str, kind: DecisionKind, label: str | None = None, geometry: Any = None) -> Decision:
    return Decision(target, kind, label, geometry, "m@1", 1, "paula", 0.0)


def test_reviewed_cells_follow_the_decisions() -> None:
    found = [{"class": c, "l0_box": [i * 100, 0, i * 100 + 20, 20]} for i, c in enumerate(["CTC", "CTC", "CTM", "CTC"])]
    cells = reviewed_cells(found, [
        _decision("d:0", DecisionKind.REJECTED), _decision("d:1", DecisionKind.CONFIRMED, "CTM"),
        _decision("d:2", DecisionKind.CONFIRMED, "CTM"), _decision("a:1", DecisionKind.ADDED, "CTC", [5, 5, 9, 9]),
    ])
    assert [(c.label, c.outcome) for c in cells] == [
        (None, "rejected"), ("CTM", "reclassed"), ("CTM", "confirmed"), ("CTC", "undecided"), ("CTC", "added")]
    assert cells[-1].box == (5.0, 5.0, 9.0, 9.0)


def test_a_tiles_rows_hold_kept_cells_at_least_half_inside_and_no_rejected_one() -> None:
    cells = [Cell((10, 10, 30, 30), "CTC", "confirmed"), Cell((50, 50, 70, 70), None, "rejected"),
             Cell((80, 10, 120, 30), "CTM", "added"), Cell((-15, 40, 5, 60), "CTC", "undecided"),
             Cell((40, 40, 44, 44), "other", "confirmed")]
    rows = [line.split() for line in tile_rows(cells, (0.0, 0.0), (1.0, 1.0), 100, NAMES)]
    assert [r[0] for r in rows] == ["0", "1"]  # the rejected, the mostly-outside and the unknown class are not
    assert [float(v) for v in rows[0][1:]] == [0.2, 0.2, 0.2, 0.2]
    cx, cy, w, h = (float(v) for v in rows[1][1:])  # cut by the edge: its visible half, inside the tile
    assert (round(cx - w / 2, 6), round(cx + w / 2, 6), cy, h) == (0.8, 1.0, 0.2, 0.2)


def test_every_cell_lies_whole_in_a_tile_that_stays_on_the_slide() -> None:
    cells = [Cell((x, y, x + 30, y + 30), "CTC", "confirmed") for x, y in ((0, 0), (40, 40), (900, 10), (1960, 1960))]
    origins = tile_origins(cells, (2.0, 2.0), 128, (2000, 2000))
    span = 256
    for x0, y0, x1, y1 in (c.box for c in cells):
        assert any(ox <= x0 and x1 <= ox + span and oy <= y0 and y1 <= oy + span for ox, oy in origins)
    assert all(0 <= ox <= 2000 - span and 0 <= oy <= 2000 - span for ox, oy in origins)
    assert len(origins) == 3  # the two cells near the corner share one


def _case(key: str) -> SlideCase:
    return SlideCase(review=SimpleNamespace(), job=SimpleNamespace(), slide_key=key, paths=[], cells=[],  # type: ignore[arg-type]
                     mpp_um=0.5, fallback_mpp_um=None, model_version="m@1")


def test_the_split_is_by_slide_deterministic_and_leaves_neither_empty() -> None:
    cases = [_case(f"/slides/{n}.svs") for n in range(40)] + [_case("/slides/3.svs")]
    assign_splits(cases)
    by_key: dict[str, set[str]] = {}
    for case in cases:
        by_key.setdefault(case.slide_key, set()).add(case.split)
    assert all(len(splits) == 1 for splits in by_key.values())  # a slide's jobs share its split
    again = [_case(c.slide_key) for c in cases]
    assign_splits(again)
    assert [c.split for c in again] == [c.split for c in cases]
    assert 0 < sum(c.split == "val" for c in cases) < len(cases)
    for pair in ([_case("/a"), _case("/b")], [_case("/c"), _case("/d")], [_case("/e"), _case("/f")]):
        assign_splits(pair)
        assert sorted(c.split for c in pair) == ["train", "val"]
