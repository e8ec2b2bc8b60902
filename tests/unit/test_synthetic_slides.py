from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide

from pipelines.synthetic.slides import SlideSpec, write_slide


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
