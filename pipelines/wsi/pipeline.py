"""``wsi-ctc``: circulating tumour cells (CTC) and clusters (CTM) on a whole-slide image.

read (openslide, best pyramid level for the processing µm/px) → tissue mask on an overview → tile grid
over tissue with overlap ≥ the largest object → tiles read ahead in threads → batched YOLO11 → level-0
boxes → class-aware merge across seams → CTM from the model and from grouping close CTCs → counts,
density per mm² of tissue, a triage priority, every detection, QuPath GeoJSON, a JSON of detections and a
preview image. Memory is bounded by the read-ahead depth and the batch, whatever the slide size.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.base import ModelRef, PipelineInput, PipelineResult
from pipelines.errors import InputError, PipelineOptionsError
from pipelines.models.registry import ModelEntry, resolve
from pipelines.models.registry import entry as model_entry
from pipelines.progress import Progress
from pipelines.wsi.detector import STRIDE_PX, Detector, Normalisation
from pipelines.wsi.geojson import write_geojson
from pipelines.wsi.labels import CTC, CTM
from pipelines.wsi.merge import Detection, combine_clusters, merge_across_seams, to_level0
from pipelines.wsi.prefetch import batched, read_ahead
from pipelines.wsi.preview import write_preview
from pipelines.wsi.reader import SlideReader
from pipelines.wsi.tiling import Tile, TileGrid, plan_tiles
from pipelines.wsi.tissue import TissueMask, TissueMethod, tissue_mask

log = logging.getLogger(__name__)

GEOJSON_FILE = "detections.geojson"
DETECTIONS_FILE = "detections.json"
PREVIEW_FILE = "preview.png"
TILES_STAGE = "tiles"  # what a run's progress counts: tiles analysed of those over tissue
DEFAULT_MODEL = "wsi-ctc-yolo11n"
MASK_MPP_UM = 8.0  # overview resolution for the tissue mask ...
MASK_MAX_SIDE_PX = 4096  # ... coarser for slides so large that the overview would exceed this
SEAM_MARGIN_PX = 2.0  # a box this close to an inner tile edge may be cut by the seam
DEFAULT_MAX_OBJECT_UM = 90.0  # the largest cluster the generator makes, for models that do not say
CELLSEARCH_CUTOFF = 5  # CTCs at or above which a sample is unfavourable (CellSearch, per 7.5 mL)


class WsiCtcOptions(BaseModel):
    """``pipelines: {wsi-ctc: {...}}`` in the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default=DEFAULT_MODEL, description="registered weights (pipelines/models/*/manifest.json)")
    manifest: Path | None = Field(default=None, description="manifest.json of retrained weights (default: shipped)")
    processing_mpp_um: float | None = Field(
        default=None, gt=0.05, le=20, description="µm/px the model sees; default: the model's training resolution"
    )
    fallback_mpp_um: float | None = Field(
        default=0.5, gt=0.03, le=20, description="µm/px for slides without a usable one; null refuses them"
    )
    tile_px: int | None = Field(
        default=None, ge=64, le=4096,
        description="tile side at the processing resolution; default 512 on the CPU (cache-friendly), 1024 on CUDA",
    )
    overlap_px: int | None = Field(
        default=None, ge=0, description="tile overlap; default: the model's largest object plus seam margins"
    )
    batch_size: int | None = Field(default=None, ge=1, le=512, description="default 8 on the CPU, 16 on CUDA")
    confidence: float | None = Field(default=None, gt=0, lt=1, description="default: the model's F1-optimal one")
    nms_iou: float = Field(default=0.5, gt=0, lt=1)
    ctm_grouping_distance_um: float = Field(default=5.0, ge=0, description="CTCs closer than this form a CTM")
    tissue_method: TissueMethod = "auto"
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    read_workers: int = Field(default=2, ge=1, le=64, description="threads reading tiles ahead of inference")

    @model_validator(mode="after")
    def _geometry(self) -> WsiCtcOptions:
        if self.tile_px is not None and self.tile_px % STRIDE_PX:
            raise ValueError(f"tile_px must be a multiple of {STRIDE_PX}")
        if self.overlap_px is not None and self.tile_px is not None and self.overlap_px >= self.tile_px:
            raise ValueError("overlap_px must be smaller than tile_px")
        return self


@dataclass(frozen=True)
class _ModelSetup:
    entry: ModelEntry
    detector: Detector
    mpp_um: float
    confidence: float
    max_object_um: float | None
    tile_px: int
    overlap_px: int
    batch_size: int


def tile_for(options: WsiCtcOptions, device: str) -> tuple[int, int]:
    """Tile side and batch size: as configured, else what runs fastest on the device (measured: on a CPU,
    batches of 512-px tiles stay in cache and run several times faster per pixel than 768 px or more)."""
    cuda = device.startswith("cuda")
    return options.tile_px or (1024 if cuda else 512), options.batch_size or (16 if cuda else 8)


def overlap_for(options: WsiCtcOptions, mpp_um: float, max_object_um: float | None, tile_px: int = 512) -> int:
    """The configured overlap, or the largest object (default 90 µm) plus seam margins, in whole strides."""
    if options.overlap_px is not None:
        overlap = options.overlap_px
    else:
        needed = (max_object_um or DEFAULT_MAX_OBJECT_UM) / mpp_um + 2 * SEAM_MARGIN_PX + 2
        overlap = math.ceil(needed / STRIDE_PX) * STRIDE_PX
    if overlap >= tile_px:
        raise PipelineOptionsError(
            f"pipelines.wsi-ctc: tiles of {tile_px} px cannot overlap by the {overlap} px that objects of "
            f"{max_object_um or DEFAULT_MAX_OBJECT_UM:g} µm need at {mpp_um:g} µm/px; use larger tiles"
        )
    return overlap


class WsiCtcPipeline:
    name: ClassVar[str] = "wsi-ctc"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[WsiCtcOptions]] = WsiCtcOptions

    def __init__(self, options: WsiCtcOptions | None = None) -> None:
        self.options = options or WsiCtcOptions()
        self._model: _ModelSetup | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ model

    def installed_models(self) -> tuple[ModelRef, ...]:
        """The models a run would use now, as the manifest names them (not loaded)."""
        return (model_entry(self.options.model, self.options.manifest).ref,)

    def model(self) -> _ModelSetup:
        """The registered weights, hash-checked and loaded once per process."""
        with self._lock:
            if self._model is None:
                entry = resolve(self.options.model, self.options.manifest)
                info = entry.info
                mpp = float(self.options.processing_mpp_um or info.get("mpp_um", 0.5))
                max_object = float(info["max_object_um"]) if info.get("max_object_um") else None
                detector = Detector(entry.path, device=self.options.device, normalisation=Normalisation.from_info(info))
                tile, batch = tile_for(self.options, detector.device)
                overlap = overlap_for(self.options, mpp, max_object, tile)
                self._model = _ModelSetup(
                    entry, detector, mpp, float(self.options.confidence or info.get("confidence", 0.25)),
                    max_object, tile, overlap, batch,
                )
            return self._model

    # ------------------------------------------------------------------------------------------ run

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        check_input(inp)
        opts = self.options
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        with SlideReader.open(inp.paths, fallback_mpp_um=opts.fallback_mpp_um) as reader:
            setup = self.model()
            warnings = [w for w in (reader.resolution.warning,) if w]
            mpp = setup.mpp_um
            choice = reader.level_for(mpp)
            level_mpp = reader.resolution.mean_um * reader.level_downsamples[choice.level]
            if level_mpp > mpp * 1.05:
                warnings.append(
                    f"the slide's finest resolution ({level_mpp:.3g} µm/px) is coarser than the processing "
                    f"resolution ({mpp:g} µm/px): tiles are upsampled and small cells may be missed"
                )
            overlap_um = setup.overlap_px * mpp
            if setup.max_object_um and overlap_um < setup.max_object_um:
                warnings.append(
                    f"tile overlap {overlap_um:g} µm is smaller than the largest object the model knows "
                    f"({setup.max_object_um:g} µm): clusters on seams may be split"
                )
            mask_mpp = max(
                MASK_MPP_UM, reader.resolution.mean_um, max(reader.width_l0, reader.height_l0) *
                reader.resolution.mean_um / MASK_MAX_SIDE_PX,
            )
            overview = reader.read_overview(mask_mpp)
            mask = tissue_mask(overview, mask_mpp, reader.l0_per_px(mask_mpp), opts.tissue_method)
            if mask.modality == "fluorescence":
                reader.fill_rgb = (0, 0, 0)
            if not mask.mask.any():
                warnings.append("no tissue found on the slide; nothing was analysed")
            grid = plan_tiles(
                reader.width_l0, reader.height_l0, reader.l0_per_px(mpp), setup.tile_px, setup.overlap_px,
                mask.widened(overlap_um),
            )
            timings["open_and_mask_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            raw = self._detect(reader, grid, mpp, setup, inp.progress)
            timings["tiles_s"] = time.monotonic() - t1
        merged = merge_across_seams(raw, opts.nms_iou)
        mpp_xy = (reader.resolution.mpp_x_um, reader.resolution.mpp_y_um)
        findings = combine_clusters(merged, opts.ctm_grouping_distance_um, mpp_xy)
        findings.sort(key=lambda d: (d.cls, d.l0_y0, d.l0_x0))
        timings["total_s"] = time.monotonic() - t0
        summary = self._summary(reader, grid, mask, mpp, findings, timings, len(raw))
        slide_key = inp.series_uid or Path(inp.key).name
        write_geojson(out_dir / GEOJSON_FILE, findings, slide_key)
        (out_dir / DETECTIONS_FILE).write_text(
            json.dumps({"slide": slide_key, "coordinates": "level-0 pixels", "mpp_um": list(mpp_xy),
                        "detections": [d.as_dict() for d in findings]}, indent=1),
            encoding="utf-8",
        )
        write_preview(out_dir / PREVIEW_FILE, overview, mask, findings)
        log.info(
            "%s: %d CTC, %d CTM on %.2f mm² of tissue (%d of %d tiles, %.1f s)",
            reader.name, summary["ctc_count"], summary["ctm_count"], summary["tissue_area_mm2"],
            len(grid.tiles), grid.total, timings["total_s"],
        )
        return PipelineResult(
            summary=summary,
            files=(GEOJSON_FILE, DETECTIONS_FILE, PREVIEW_FILE),
            models=(ModelRef(setup.entry.name, setup.entry.version, setup.entry.sha256),),
            warnings=tuple(warnings),
        )

    def _detect(self, reader: SlideReader, grid: TileGrid, mpp: float, setup: _ModelSetup, progress: Progress,
                ) -> list[Detection]:
        """Every tile's detections, in level-0 pixels; ``progress`` hears of the tiles done (stage ``tiles``)."""
        opts = self.options
        choice = reader.level_for(mpp)
        t = grid.tile_px

        def read(tile: Tile) -> np.ndarray:
            return reader.read(tile.l0_x, tile.l0_y, t, t, mpp, choice)

        found: list[Detection] = []
        total = len(grid.tiles)
        done = 0
        progress(done, total, TILES_STAGE)
        tiles = read_ahead(grid.tiles, read, workers=opts.read_workers, depth=2 * setup.batch_size)
        for batch in batched(tiles, setup.batch_size):
            stacked = np.stack([pixels for _, pixels in batch])
            outputs = setup.detector.predict(stacked, confidence=setup.confidence, iou=opts.nms_iou)
            for (tile, _), out in zip(batch, outputs, strict=True):
                found.extend(to_level0(out, tile, grid, SEAM_MARGIN_PX))
            done += len(batch)
            progress(done, total, TILES_STAGE)
        return found

    # ------------------------------------------------------------------------------------------ summary

    def _summary(
        self, reader: SlideReader, grid: TileGrid, mask: TissueMask, mpp: float, findings: list[Detection],
        timings: dict[str, float], raw_count: int,
    ) -> dict[str, Any]:
        ctc = [d for d in findings if d.cls == CTC]
        ctm = [d for d in findings if d.cls == CTM]
        area = mask.area_mm2()
        tiles_s = max(timings["tiles_s"], 1e-9)
        tissue_mp = area / mpp**2  # tissue at the processing resolution, in megapixels
        return {
            "ctc_count": len(ctc),
            "ctm_count": len(ctm),
            "counts": {"CTC": len(ctc), "CTM": len(ctm)},
            "tissue_area_mm2": round(area, 4),
            "density_per_mm2": {
                "CTC": round(len(ctc) / area, 4) if area > 0 else None,
                "CTM": round(len(ctm) / area, 4) if area > 0 else None,
            },
            **priority(ctc, ctm),
            "detections": [d.as_dict() for d in findings],
            "slide": {
                "file": reader.name,
                "format": reader.format,
                "vendor": reader.vendor,
                "width_px": reader.width_l0,
                "height_px": reader.height_l0,
                "mpp_um": [reader.resolution.mpp_x_um, reader.resolution.mpp_y_um],
                "mpp_source": reader.resolution.source,
                "levels": len(reader.level_dimensions),
                "modality": mask.modality,
            },
            "processing": {
                "mpp_um": mpp,
                "level": reader.level_for(mpp).level,
                "tile_px": grid.tile_px,
                "overlap_px": grid.overlap_px,
                "tiles_total": grid.total,
                "tiles_processed": len(grid.tiles),
                "raw_detections": raw_count,
                "tissue_method": mask.method,
                "tiles_per_s": round(len(grid.tiles) / tiles_s, 2),
                "tissue_megapixels": round(tissue_mp, 2),
                "tissue_megapixels_per_s": round(tissue_mp / tiles_s, 2),
                **{k: round(v, 3) for k, v in timings.items()},
            },
            "coordinates": "level-0 pixels",
        }


def priority(ctc: list[Detection], ctm: list[Detection]) -> dict[str, Any]:
    """A triage score in [0, 1] and a level. Clusters weigh most: CTMs carry a worse prognosis than single
    CTCs; 5 CTCs is the CellSearch cut-off for an unfavourable sample."""
    evidence = sum(d.confidence for d in ctc) + 3 * sum(d.confidence for d in ctm)
    score = 1 - math.exp(-evidence / CELLSEARCH_CUTOFF)
    level = "high" if ctm or len(ctc) >= CELLSEARCH_CUTOFF else "medium" if ctc else "low"
    return {"priority_score": round(score, 4), "priority": level}


def check_input(inp: PipelineInput) -> None:
    if inp.kind not in ("slide", "dicom-series"):
        raise InputError(f"wsi-ctc takes slides and DICOM whole-slide series, not {inp.kind!r}")
