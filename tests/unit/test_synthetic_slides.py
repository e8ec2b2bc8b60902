from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest

from pipelines.synthetic.slides import SlideSpec, SlideTruth, write_slide


def test_slide_is_a_pyramidal_tiff_openslide_opens_with_resolution(tmp_path: Path) -> None:
    spec = SlideSpec(width=3000, height=2200, mpp=0.25, ctc=5, ctm=2, seed=3)
    truth = write_slide(tmp_path / "s.tiff", spec)
    with openslide.OpenSlide(str(tmp_path / "s.tiff")) as slide:
        assert slide.dimensions == (3000, 2200)
        assert slide.level_count >= 2
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == 0.25
        # a ground-truth CTC is darker (brightfield stain) than the background around the smear
        _, x0, y0, x1, y1 = next(b for b in truth.boxes if b[0] == 0)
        cell = np.asarray(slide.read_region((int(x0), int(y0)), 0, (int(x1 - x0), int(y1 - y0))))[..., :3]
        corner = np.asarray(slide.read_region((0, 0), 0, (50, 50)))[..., :3]
        assert cell.mean() < corner.mean() - 20
    counts = truth.counts()
    assert counts["CTM"] == 2 and counts["CTC"] >= 5 + 2 * 2
    saved = json.loads((tmp_path / "s.tiff.truth.json").read_text())
    assert saved["counts"] == counts and len(saved["boxes"]) == len(truth.boxes)


def test_same_seed_same_slide(tmp_path: Path) -> None:
    spec = SlideSpec(width=1024, height=1024, ctc=3, ctm=1, seed=9)
    a = write_slide(tmp_path / "a.tiff", spec)
    b = write_slide(tmp_path / "b.tiff", spec)
    assert a.boxes == b.boxes
    assert (tmp_path / "a.tiff").read_bytes() == (tmp_path / "b.tiff").read_bytes()


def test_fluorescence_ctc_is_green_and_blue_not_red(tmp_path: Path) -> None:
    truth = write_slide(tmp_path / "f.tiff", SlideSpec(width=2048, height=2048, mode="fluorescence", ctc=4, ctm=0))
    with openslide.OpenSlide(str(tmp_path / "f.tiff")) as slide:
        _, x0, y0, x1, y1 = truth.boxes[0]
        px = np.asarray(slide.read_region((int(x0), int(y0)), 0, (int(x1 - x0), int(y1 - y0))))[..., :3].astype(float)
    r, g, b = px[..., 0].mean(), px[..., 1].mean(), px[..., 2].mean()
    assert g > 2 * r and b > 2 * r


def test_pyramid_halves_down_to_one_tile_and_lower_levels_match_level_0(tmp_path: Path) -> None:
    write_slide(tmp_path / "p.tiff", SlideSpec(width=3000, height=1800, ctc=3, ctm=1, seed=4))
    with openslide.OpenSlide(str(tmp_path / "p.tiff")) as slide:
        assert slide.level_dimensions == ((3000, 1800), (1500, 900), (750, 450), (375, 225))
        assert [round(d) for d in slide.level_downsamples] == [1, 2, 4, 8]
        level0 = np.asarray(slide.read_region((1000, 600), 0, (800, 400)))[..., :3].astype(float)
        level1 = np.asarray(slide.read_region((1000, 600), 1, (400, 200)))[..., :3].astype(float)
    halved = level0.reshape(200, 2, 400, 2, 3).mean(axis=(1, 3))
    assert np.abs(halved - level1).mean() < 3


def test_truth_outlines_boxes_and_clusters_are_consistent(tmp_path: Path) -> None:
    truth = write_slide(tmp_path / "t.tiff", SlideSpec(width=4096, height=4096, ctc=12, ctm=5, seed=8))
    assert len(truth.outlines) == len(truth.boxes)
    for (_, x0, y0, x1, y1), outline in zip(truth.boxes, truth.outlines, strict=True):
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx((x0, y0, x1, y1))
    clusters = [b for b in truth.boxes if b[0] == 1]
    singles_and_members = [b for b in truth.boxes if b[0] == 0]
    assert len(clusters) == 5
    for _, cx0, cy0, cx1, cy1 in clusters:
        eps = 0.01
        members = [
            b for b in singles_and_members
            if cx0 - eps <= b[1] and cy0 - eps <= b[2] and b[3] <= cx1 + eps and b[4] <= cy1 + eps
        ]
        assert 2 <= len(members) <= 8
        assert (cx1 - cx0) * 0.5 <= 90 and (cy1 - cy0) * 0.5 <= 90  # µm: the largest object the tiles allow for
    # separate targets keep a clear gap, so close CTCs mean a cluster
    loaded = SlideTruth.load(tmp_path / "t.tiff.truth.json")
    assert loaded.boxes == [tuple(b) for b in truth.boxes] and loaded.counts() == truth.counts()


def test_fluorescence_hard_negatives_follow_the_cellsearch_convention(tmp_path: Path) -> None:
    spec = SlideSpec(width=4096, height=4096, mode="fluorescence", ctc=3, ctm=0, hard_negatives_per_mm2=400, seed=2)
    write_slide(tmp_path / "f.tiff", spec)
    with openslide.OpenSlide(str(tmp_path / "f.tiff")) as slide:
        px = np.asarray(slide.read_region((0, 0), 0, (4096, 4096)))[..., :3].astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    leukocyte_like = (r > 120) & (b > 80) & (g < 60)  # CD45+ DAPI+ CK-
    debris_like = (g > 120) & (b < 40) & (r < 60)  # CK+ without a nucleus
    assert leukocyte_like.sum() > 10_000 and debris_like.sum() > 500


def test_generation_memory_stays_bounded(tmp_path: Path) -> None:
    # 8192 x 8192 px: 200 MB as one RGB array; the generator holds a few tiles and blocks at a time
    tracemalloc.start()
    write_slide(tmp_path / "big.tiff", SlideSpec(width=8192, height=8192, ctc=20, ctm=4, seed=5))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 * 1024 * 1024
    with openslide.OpenSlide(str(tmp_path / "big.tiff")) as slide:
        assert slide.dimensions == (8192, 8192)
