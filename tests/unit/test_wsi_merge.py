"""Seam-free merging in level-0 coordinates and CTM grouping, on hand-made detections."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.wsi.labels import CTC, CTM
from pipelines.wsi.merge import Detection, combine_clusters, group_ctcs, merge_across_seams, to_level0
from pipelines.wsi.tiling import Tile, TileGrid

MPP = (0.5, 0.5)


def ctc(x0: float, y0: float, x1: float, y1: float, conf: float = 0.9, cut: bool = False) -> Detection:
    return Detection(CTC, conf, x0, y0, x1, y1, cut)


def test_an_object_seen_whole_and_cut_by_a_seam_counts_once() -> None:
    whole = ctc(1000, 1000, 1040, 1040, 0.8)
    cut_part = ctc(1000, 1000, 1018, 1040, 0.95, cut=True)  # higher confidence, but only a part
    merged = merge_across_seams([cut_part, whole], 0.5)
    assert merged == [whole]


def test_two_whole_views_of_one_object_count_once_and_keep_the_more_confident() -> None:
    a = ctc(1000, 1000, 1040, 1040, 0.7)
    b = ctc(1001, 999, 1041, 1039, 0.9)
    assert merge_across_seams([a, b], 0.5) == [b]


def test_neighbours_and_other_classes_are_not_suppressed() -> None:
    a = ctc(1000, 1000, 1040, 1040)
    b = ctc(1036, 1000, 1076, 1040)  # touching neighbour: IoU < 0.5
    cluster = Detection(CTM, 0.9, 995, 995, 1080, 1045)
    merged = merge_across_seams([a, b, cluster], 0.5)
    assert sorted(merged, key=lambda d: (d.cls, d.l0_x0)) == [a, b, cluster]


def test_two_cut_parts_without_a_whole_view_are_joined() -> None:
    left = ctc(1000, 1000, 1030, 1040, 0.8, cut=True)
    right = ctc(1010, 1000, 1040, 1040, 0.9, cut=True)
    (joined,) = merge_across_seams([left, right], 0.5)
    assert (joined.l0_x0, joined.l0_x1, joined.confidence) == (1000, 1040, 0.9)


def test_merge_is_exact_on_many_random_duplicates() -> None:
    rng = np.random.default_rng(0)
    objects = [(float(x), float(y)) for x, y in rng.uniform(0, 50_000, (400, 2))]
    objects = [o for i, o in enumerate(objects) if all(np.hypot(o[0] - p[0], o[1] - p[1]) > 120 for p in objects[:i])]
    detections = []
    for x, y in objects:
        detections.append(ctc(x, y, x + 40, y + 40, 0.9))
        detections.append(ctc(x + 1, y, x + 41, y + 40, 0.8))  # second tile's view
        detections.append(ctc(x, y, x + 15, y + 40, 0.95, cut=True))  # third tile's cut view
    merged = merge_across_seams(detections, 0.5)
    assert len(merged) == len(objects)
    assert all(not d.cut and d.confidence == 0.9 for d in merged)


def test_to_level0_scales_offsets_and_marks_inner_edges_only() -> None:
    grid = TileGrid(tile_px=512, overlap_px=128, l0_per_px_x=2.0, l0_per_px_y=2.0, columns=3, rows=3, tiles=())
    inner = Tile(1, 1, 768, 768, False, False, False, False)
    corner = Tile(0, 0, 0, 0, True, True, False, False)
    raw = np.array([[0.5, 100, 40, 140, 0.9, 0], [100, 100, 140, 140, 0.8, 0]], np.float32)
    a, b = to_level0(raw, inner, grid)
    assert a.cut and not b.cut
    assert (b.l0_x0, b.l0_y0, b.l0_x1, b.l0_y1) == (968.0, 968.0, 1048.0, 1048.0)
    edge, _ = to_level0(raw, corner, grid)
    assert not edge.cut  # the left edge of the first column is the slide's border, not a seam


def test_close_ctcs_form_connected_groups() -> None:
    # a chain of three touching cells, a pair 4 µm apart, and a single 30 µm from anything
    cells = [
        ctc(0, 0, 40, 40), ctc(42, 0, 82, 40), ctc(84, 10, 124, 50),
        ctc(1000, 0, 1040, 40), ctc(1048, 0, 1088, 40),
        ctc(2000, 0, 2040, 40),
    ]
    assert group_ctcs(cells, distance_um=5.0, mpp=MPP) == [[0, 1, 2], [3, 4]]
    assert group_ctcs(cells, distance_um=1.5, mpp=MPP) == [[0, 1, 2]]


def test_a_model_ctm_and_the_group_it_covers_are_one_cluster() -> None:
    members = [ctc(0, 0, 40, 40, 0.9), ctc(42, 0, 82, 40, 0.8)]
    model_ctm = Detection(CTM, 0.85, -2, -2, 84, 42)
    elsewhere = [ctc(5000, 0, 5040, 40), ctc(5041, 0, 5081, 40)]  # a group the model missed as CTM
    lone_model_ctm = Detection(CTM, 0.6, 9000, 0, 9090, 60)  # a CTM whose members were not detected
    found = combine_clusters([*members, model_ctm, *elsewhere, lone_model_ctm], 5.0, MPP)
    clusters = [d for d in found if d.cls == CTM]
    assert [d.source for d in clusters] == ["model+grouping", "model", "grouping"]
    assert [d.members for d in clusters] == [2, 0, 2]
    assert (clusters[0].l0_x0, clusters[0].l0_x1) == (0, 82)  # the group's box hugs the members
    assert clusters[0].confidence == pytest.approx(0.85)  # the higher of model (0.85) and group mean (0.85)
    assert sum(1 for d in found if d.cls == CTC) == 4
    assert clusters[2].confidence == pytest.approx(0.9)


def test_two_model_boxes_on_one_group_are_one_cluster() -> None:
    members = [ctc(0, 0, 40, 40), ctc(42, 0, 82, 40), ctc(84, 0, 124, 40)]
    halves = [Detection(CTM, 0.7, 0, 0, 82, 40), Detection(CTM, 0.6, 42, 0, 124, 40)]
    found = combine_clusters([*members, *halves], 5.0, MPP)
    assert sum(1 for d in found if d.cls == CTM) == 1
