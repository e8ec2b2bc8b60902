"""The benchmarks' scoring against a generated slide's truth (benchmarks/truth_scoring.py): recall, precision,
duplicate detections of one object, and which objects lie on a tile seam."""

from __future__ import annotations

import numpy as np

from benchmarks.truth_scoring import inner_edges, on_seam, owners, score

CLASSES = ("CTC", "CTM")
CTC, CTM = 0, 1
# truth: class, x0, y0, x1, y1; A crosses the tile edge x = 320, B lies inside one tile, C is a cluster
A = (CTC, 300.0, 100.0, 340.0, 140.0)
B = (CTC, 400.0, 400.0, 440.0, 440.0)
C = (CTM, 600.0, 100.0, 700.0, 200.0)
TRUTH = np.array([A, B, C])


def det(x0: float, y0: float, x1: float, y1: float, confidence: float, cls: int) -> list[float]:
    return [x0, y0, x1, y1, confidence, float(cls)]


def test_inner_edges_leave_out_the_slide_border() -> None:
    # tiles of 512 px every 320 px over 1000 px: starts 0, 320, 640; the last tile runs past the border
    assert inner_edges([0, 320, 640], 512, 1000).tolist() == [320.0, 512.0, 640.0, 832.0]
    assert inner_edges([0], 512, 512).tolist() == []


def test_an_object_is_on_a_seam_when_its_box_crosses_an_inner_edge() -> None:
    x_edges = np.array([320.0, 512.0])
    touching = np.array([[CTC, 320.0, 0.0, 360.0, 40.0]])  # starts exactly on the edge: not cut by it
    assert on_seam(TRUTH, x_edges, np.array([])).tolist() == [True, False, False]
    assert on_seam(touching, x_edges, np.array([])).tolist() == [False]
    assert on_seam(TRUTH, np.array([]), np.array([420.0])).tolist() == [False, True, False]


def test_a_detection_belongs_to_the_same_class_object_that_covers_most_of_it() -> None:
    pred = np.array([
        det(300, 100, 340, 140, 0.9, CTC),  # A whole
        det(320, 100, 340, 140, 0.6, CTC),  # the right half of A, as the next tile saw it cut
        det(600, 100, 650, 150, 0.8, CTC),  # a CTC box inside the cluster C: not C's (other class)
        det(330, 100, 410, 140, 0.5, CTC),  # mostly glass between A and B: nobody's
    ])
    assert owners(pred, TRUTH).tolist() == [0, 0, -1, -1]
    assert owners(pred[:0], TRUTH).tolist() == []


def test_score_counts_matches_and_the_duplicates_on_seams() -> None:
    pred = np.array([
        det(300, 100, 340, 140, 0.9, CTC),  # A
        det(320, 100, 340, 140, 0.6, CTC),  # A again, cut at the seam: a duplicate
        det(401, 401, 441, 441, 0.8, CTC),  # B
        det(402, 400, 440, 438, 0.7, CTC),  # B a second time, whole: a duplicate away from seams
        det(900, 900, 940, 940, 0.95, CTC),  # a false positive
        det(600, 100, 700, 200, 0.9, CTM),  # C
    ])
    s = score(pred, TRUTH, np.array([320.0]), np.array([]), CLASSES)
    ctc, ctm = s["CTC"], s["CTM"]
    assert (ctc.objects, ctc.detections, ctc.matched) == (2, 5, 2)
    assert (ctc.duplicates, ctc.seam_objects, ctc.seam_duplicates) == (2, 1, 1)
    assert ctc.recall == 1.0
    assert ctc.precision == 2 / 5
    assert (ctm.objects, ctm.matched, ctm.duplicates, ctm.seam_duplicates) == (1, 1, 0, 0)


def test_score_without_detections() -> None:
    s = score(np.zeros((0, 6)), TRUTH, np.array([320.0]), np.array([]), CLASSES)
    assert (s["CTC"].matched, s["CTC"].recall, s["CTC"].precision, s["CTC"].duplicates) == (0, 0.0, 0.0, 0)
