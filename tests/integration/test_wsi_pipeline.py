"""``wsi-ctc`` with the shipped weights: accuracy on held-out generated data, seams, real files, bad input.

Generated data here uses seeds the shipped model never saw (its training slides are seeds 1000–1029, see
``pipelines/models/wsi/manifest.json``).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import InputError
from pipelines.models.registry import resolve
from pipelines.synthetic.slides import SlideSpec, SlideTruth, write_slide
from pipelines.wsi.dataset import CutSettings, cut_slide, generate_slides, split_images, training_specs, write_data_yaml
from pipelines.wsi.detector import Detector, Normalisation
from pipelines.wsi.evaluation import ClusterRule, box_iou, predict_split, score_predictions
from pipelines.wsi.pipeline import DEFAULT_MODEL, WsiCtcOptions, WsiCtcPipeline
from pipelines.wsi.tiling import plan_tiles
from tests.conftest import shared

HELD_OUT_SEED = 7  # generated slides get seeds 7000+; training used 1000-1029


@pytest.fixture(scope="module")
def pipeline() -> WsiCtcPipeline:
    return WsiCtcPipeline()


def run(pipeline: WsiCtcPipeline, paths: list[Path], out: Path, kind: str = "slide") -> PipelineResult:
    out.mkdir(parents=True, exist_ok=True)
    return pipeline.run(PipelineInput(kind, str(paths[0]), tuple(paths)), out)


def test_detector_map_on_a_held_out_generated_test_split(tmp_path: Path) -> None:
    entry = resolve(DEFAULT_MODEL)
    info = entry.info
    specs = training_specs(2, HELD_OUT_SEED)  # one brightfield, one fluorescence
    assert all(s.seed // 1000 == HELD_OUT_SEED for s in specs)
    assert {s.mode for s in specs} == {"brightfield", "fluorescence"}
    slides = generate_slides(tmp_path / "slides", specs)
    root = tmp_path / "held-out"
    settings = CutSettings(mpp_um=info["mpp_um"], tile_px=info["imgsz"], seed=HELD_OUT_SEED)
    rng = random.Random(HELD_OUT_SEED)
    for slide in slides:
        truth = SlideTruth.load(slide.with_name(slide.name + ".truth.json"))
        cut_slide(slide, truth, root / "images" / "test", root / "labels" / "test", settings, rng)
    data_yaml = write_data_yaml(root, {"train": "images/test", "val": "images/test", "test": "images/test"})
    detector = Detector(entry.path, normalisation=Normalisation.from_info(info))
    predictions = predict_split(detector, split_images(data_yaml, "test"))
    # what the pipeline reports: CTMs from the model joined with groups of close CTCs, at its operating point
    rule = ClusterRule(WsiCtcOptions().ctm_grouping_distance_um / info["mpp_um"], info["confidence"])
    evaluation = score_predictions(predictions, rule)
    assert evaluation.objects["CTC"] > 300 and evaluation.objects["CTM"] > 40
    assert evaluation.map50 >= 0.95, (evaluation.headline(), evaluation.ap50_95)
    assert evaluation.map50_95 >= 0.88, (evaluation.headline(), evaluation.ap50_95)
    # the model's own CTC class carries it: its boxes are what the clusters are built from
    model_only = score_predictions(predictions)
    assert model_only.ap50["CTC"] >= 0.97 and model_only.ap50_95["CTC"] >= 0.85, model_only.ap50_95


@pytest.mark.parametrize(
    ("mode", "side", "ctc", "ctm"),
    [("brightfield", 20480, 150, 30), ("fluorescence", 12288, 80, 20)],  # the issue asks for >= 20k px once
)
def test_counts_on_a_large_slide_within_5_percent_and_no_object_counted_twice(
    pipeline: WsiCtcPipeline, tmp_path: Path, mode: str, side: int, ctc: int, ctm: int
) -> None:
    spec = SlideSpec(width=side, height=side, mode=mode, ctc=ctc, ctm=ctm, tissue_fraction=0.2,
                     seed=HELD_OUT_SEED * 1000 + 100)
    truth = write_slide(tmp_path / "big.tiff", spec)
    result = run(pipeline, [tmp_path / "big.tiff"], tmp_path / "out")
    counts, expected = result.summary["counts"], truth.counts()
    for name in ("CTC", "CTM"):
        assert abs(counts[name] - expected[name]) <= 0.05 * expected[name], (counts, expected)
    # objects crossing a tile seam: each is found once, never twice
    processing = result.summary["processing"]
    scale = processing["mpp_um"] / spec.mpp  # level-0 px per tile px
    grid = plan_tiles(spec.width, spec.height, (scale, scale), processing["tile_px"], processing["overlap_px"])
    edges = sorted({t.l0_x for t in grid.tiles} | {t.l0_x + processing["tile_px"] * scale for t in grid.tiles})
    detections = result.summary["detections"]
    crossing = 0
    for cls_index, name in enumerate(("CTC", "CTM")):
        found = np.array([d["l0_box"] for d in detections if d["class"] == name]).reshape(-1, 4)
        objects = np.array([b[1:] for b in truth.boxes if b[0] == cls_index]).reshape(-1, 4)
        iou = box_iou(objects, found)
        for i, (x0, _, x1, _) in enumerate(objects):
            if any(x0 < e < x1 for e in edges):
                crossing += 1
                assert (iou[i] >= 0.5).sum() <= 1, f"{name} at {objects[i]} counted {(iou[i] >= 0.5).sum()} times"
        duplicates = box_iou(found, found) >= 0.5
        np.fill_diagonal(duplicates, False)
        assert not duplicates.any()
    assert crossing >= 20  # the check above really saw seam objects
    assert result.summary["tissue_area_mm2"] > 0.5 * spec.tissue_fraction * (side * spec.mpp / 1000) ** 2
    assert result.summary["density_per_mm2"]["CTC"] == pytest.approx(
        counts["CTC"] / result.summary["tissue_area_mm2"], rel=1e-3
    )
    assert result.summary["priority"] == "high" and 0.9 < result.summary["priority_score"] <= 1
    assert result.summary["processing"]["tiles_processed"] < result.summary["processing"]["tiles_total"]


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("wsi/CMU-1-Small-Region.svs", "aperio"),
        ("wsi/openslide-python_small.svs", "aperio"),
        ("wsi/test3-DAPI-2-(387).ndpi", "hamamatsu"),
        ("wsi/openslide-python_boxes.tiff", "generic-tiff"),
        ("wsi/large_image_yb10kx5k.zstd.tiff", "generic-tiff"),
        ("wsi/highdicom_sm_image.dcm", "dicom"),
        ("wsi/dicom-boxes", "dicom"),
    ],
)
def test_real_slides_from_other_tools_process_without_error(
    pipeline: WsiCtcPipeline, tmp_path: Path, path: str, fmt: str
) -> None:
    source = shared(path)
    paths = sorted(source.iterdir()) if source.is_dir() else [source]
    kind = "dicom-series" if fmt == "dicom" else "slide"
    result = run(pipeline, paths, tmp_path / "out", kind)
    summary = result.summary
    assert summary["slide"]["format"] == fmt
    assert summary["ctc_count"] >= 0 and summary["ctm_count"] >= 0
    assert summary["ctc_count"] + summary["ctm_count"] == len(summary["detections"])
    assert set(result.files) == {"detections.geojson", "detections.json", "preview.png"}
    geo = json.loads((tmp_path / "out" / "detections.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(summary["detections"])
    assert result.models[0].name == DEFAULT_MODEL and len(result.models[0].sha256) == 64
    if "boxes.tiff" in path or "zstd" in path:  # 72-dpi default resolution
        assert summary["slide"]["mpp_source"] == "fallback"
        assert any("fallback of 0.5 µm/px" in w for w in result.warnings)
    if fmt == "hamamatsu":
        assert summary["slide"]["modality"] == "fluorescence"


def test_truncated_corrupt_and_unsupported_files_fail_with_a_clear_reason(
    pipeline: WsiCtcPipeline, tmp_path: Path
) -> None:
    write_slide(tmp_path / "whole.tiff", SlideSpec(width=3072, height=3072, ctc=3, ctm=1, seed=7001))
    data = (tmp_path / "whole.tiff").read_bytes()
    (tmp_path / "truncated.tiff").write_bytes(data[: len(data) // 3])
    corrupt = bytearray(data)
    with tifffile.TiffFile(tmp_path / "whole.tiff") as tif:  # zero the central tiles of level 0, which is read
        level0 = tif.pages[0]
        for i in range(len(level0.dataoffsets) // 3, 2 * len(level0.dataoffsets) // 3):
            offset, count = level0.dataoffsets[i], level0.databytecounts[i]
            corrupt[offset : offset + count] = bytes(count)
    (tmp_path / "corrupt.tiff").write_bytes(bytes(corrupt))
    (tmp_path / "notes.svs").write_text("a text file with a slide's name")
    cases = {
        "truncated.tiff": "truncated.tiff: a TIFF that openslide cannot read as a slide: truncated, corrupt",
        "corrupt.tiff": "corrupt.tiff: the slide is corrupt or truncated and cannot be decoded",
        "notes.svs": "notes.svs: unsupported file, not a slide format openslide reads",
    }
    for name, reason in cases.items():
        with pytest.raises(InputError) as caught:
            run(pipeline, [tmp_path / name], tmp_path / f"out-{name}")
        assert str(caught.value).startswith(reason), str(caught.value)


def test_a_slide_without_resolution_uses_the_fallback_or_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nompp.tiff"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(200, 240, (1024, 1024, 3), dtype=np.uint8), tile=(256, 256),
                     photometric="rgb")
    with_fallback = WsiCtcPipeline(WsiCtcOptions(fallback_mpp_um=0.5))
    result = run(with_fallback, [path], tmp_path / "a")
    assert result.summary["slide"]["mpp_um"] == [0.5, 0.5] and result.summary["slide"]["mpp_source"] == "fallback"
    assert result.warnings[0] == (
        "slide declares no resolution (µm/px); processed at the configured fallback of 0.5 µm/px"
    )
    refusing = WsiCtcPipeline(WsiCtcOptions(fallback_mpp_um=None))
    with pytest.raises(InputError, match=r"declares no resolution .* no fallback resolution is configured"):
        run(refusing, [path], tmp_path / "b")


def test_a_dicom_series_in_storage_layout_is_read_from_its_folder(pipeline: WsiCtcPipeline, tmp_path: Path) -> None:
    folder = tmp_path / "storage" / "1.2.3" / "1.2.3.4"
    shutil.copytree(shared("wsi/dicom-boxes"), folder)
    files = sorted(folder.iterdir())
    result = run(pipeline, files, tmp_path / "out", "dicom-series")
    assert result.summary["slide"]["format"] == "dicom"
    assert result.summary["slide"]["mpp_source"] == "declared"
