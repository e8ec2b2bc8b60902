"""Tissue (smear) masks on generated brightfield and fluorescence slides and on edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.synthetic.slides import SlideSpec, write_slide
from pipelines.wsi.reader import SlideReader
from pipelines.wsi.tissue import detect_modality, tissue_mask

MASK_MPP = 8.0


@pytest.mark.parametrize("mode", ["brightfield", "fluorescence"])
def test_mask_covers_the_smear_and_not_the_glass(tmp_path: Path, mode: str) -> None:
    spec = SlideSpec(width=6144, height=6144, mode=mode, ctc=6, ctm=2, tissue_fraction=0.4, seed=21)
    truth = write_slide(tmp_path / "s.tiff", spec)
    with SlideReader(tmp_path / "s.tiff", fallback_mpp_um=None) as reader:
        overview = reader.read_overview(MASK_MPP)
        mask = tissue_mask(overview, MASK_MPP, reader.l0_per_px(MASK_MPP))
    assert mask.modality == mode and detect_modality(overview) == mode
    # the smear is an irregular ellipse covering ~40 % of the slide (3.07 mm square)
    slide_mm2 = (6144 * 0.5 / 1000) ** 2
    assert 0.3 * slide_mm2 < mask.area_mm2() < 0.55 * slide_mm2
    h, w = mask.mask.shape
    assert mask.mask[h // 2, w // 2] and not mask.mask[2, 2] and not mask.mask[-3, -3]
    # every target lies on the mask (widened as the pipeline widens it)
    widened = mask.widened(128.0)
    for _, x0, y0, x1, y1 in truth.boxes:
        assert widened.coverage(x0, y0, x1, y1) > 0


def test_blank_glass_has_no_tissue_and_method_none_takes_everything() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(238, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass, MASK_MPP, (16.0, 16.0)).mask.any()
    everything = tissue_mask(glass, MASK_MPP, (16.0, 16.0), method="none")
    assert everything.mask.all() and everything.area_mm2() == pytest.approx(200 * 300 * 0.008**2)


def test_forcing_the_method_overrides_detection() -> None:
    dark = np.zeros((64, 64, 3), np.uint8)
    dark[20:40, 20:40] = (0, 180, 40)
    forced = tissue_mask(dark, MASK_MPP, (16.0, 16.0), method="brightfield")
    assert forced.modality == "brightfield"
    assert tissue_mask(dark, MASK_MPP, (16.0, 16.0)).modality == "fluorescence"
