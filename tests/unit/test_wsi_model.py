"""The shipped detector weights: they load through the registry and find a generated tumour cell on one tile."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import pytest

from pipelines.errors import PipelineOptionsError
from pipelines.models.registry import MODELS_DIR, ModelEntry, ModelError, entry, record, resolve
from pipelines.synthetic.slides import CLASS_NAMES, MAX_CLUSTER_SPAN_UM, SlideSpec, write_slide
from pipelines.wsi.detector import Detector, Normalisation
from pipelines.wsi.pipeline import DEFAULT_MODEL, WsiCtcOptions, WsiCtcPipeline, overlap_for, tile_for

SLIDE_PX = 1024


@pytest.fixture(scope="module")
def shipped() -> ModelEntry:
    return resolve(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def detector(shipped: ModelEntry) -> Detector:
    return Detector(shipped.path, device="cpu", normalisation=Normalisation.from_info(shipped.info))


def read_tile(slide: Path, l0_x: int, l0_y: int, side: int) -> np.ndarray:
    with openslide.OpenSlide(str(slide)) as handle:
        return np.array(handle.read_region((l0_x, l0_y), 0, (side, side)).convert("RGB"))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_shipped_weights_find_the_generated_tumour_cell(shipped: ModelEntry, detector: Detector,
                                                       tmp_path: Path) -> None:
    assert shipped.path.parent == MODELS_DIR / "wsi"  # shipped beside the manifest that names it
    side = int(shipped.info["imgsz"])
    # a small smear with one CTC at the model's resolution, and the same smear (same seed: same background
    # cells) without it
    spec = SlideSpec(width=SLIDE_PX, height=SLIDE_PX, mpp=shipped.info["mpp_um"], ctc=1, ctm=0, tile=256, seed=1)
    truth = write_slide(tmp_path / "ctc.tiff", spec)
    write_slide(tmp_path / "none.tiff", replace(spec, ctc=0))
    ((cls, x0, y0, x1, y1),) = truth.boxes
    assert CLASS_NAMES[cls] == "CTC"
    l0_x = int(min(max((x0 + x1 - side) / 2, 0), SLIDE_PX - side))
    l0_y = int(min(max((y0 + y1 - side) / 2, 0), SLIDE_PX - side))
    tiles = np.stack([read_tile(tmp_path / name, l0_x, l0_y, side) for name in ("ctc.tiff", "none.tiff")])
    assert detector.class_names == dict(enumerate(CLASS_NAMES))

    with_cell, without = detector.predict(tiles, confidence=float(shipped.info.get("confidence", 0.25)), iou=0.5)

    assert len(with_cell) == 1, f"one detection expected on the cell's tile, got {with_cell.tolist()}"
    ((*box, confidence, found),) = with_cell.tolist()  # where the cell is, of its class
    assert int(found) == cls and confidence > 0.5
    assert iou(tuple(box), (x0 - l0_x, y0 - l0_y, x1 - l0_x, y1 - l0_y)) > 0.8
    assert without.shape == (0, 6)  # the background cells alone are not tumour cells


def test_the_default_overlap_holds_the_largest_generated_cluster(shipped: ModelEntry) -> None:
    mpp = float(shipped.info["mpp_um"])
    overlap_px = overlap_for(WsiCtcOptions(), mpp, shipped.info.get("max_object_um"))
    assert overlap_px * mpp >= MAX_CLUSTER_SPAN_UM


def test_swapped_weights_are_refused(tmp_path: Path) -> None:
    shipped = entry(DEFAULT_MODEL)
    copy = tmp_path / "w.pt"
    shutil.copyfile(shipped.path, copy)
    manifest = tmp_path / "manifest.json"
    record("copy", "1", copy, dict(shipped.info), manifest=manifest)
    with copy.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="refusing to load it"):
        resolve("copy", manifest)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        WsiCtcOptions(tile_px=500)
    with pytest.raises(ValueError, match="smaller than tile_px"):
        WsiCtcOptions(tile_px=256, overlap_px=256)
    with pytest.raises(ValueError, match="extra"):
        WsiCtcOptions.model_validate({"tile": 512})
    assert WsiCtcPipeline.name == "wsi-ctc" and WsiCtcPipeline.Options is WsiCtcOptions
    assert overlap_for(WsiCtcOptions(), 0.5, 90.0) == 192  # 180 px of cluster plus seam margins, in strides
    with pytest.raises(PipelineOptionsError, match="use larger tiles"):
        overlap_for(WsiCtcOptions(tile_px=192), 0.5, 90.0, 192)
    assert tile_for(WsiCtcOptions(), "cpu") == (512, 8) and tile_for(WsiCtcOptions(), "cuda:0") == (1024, 16)
    assert tile_for(WsiCtcOptions(tile_px=640, batch_size=2), "cpu") == (640, 2)
