# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""``mri-tumour``: an MR series → lesions with volume, diameter, radiomics and a malignancy probability.

Stages: :func:`~pipelines.mri.volume.load_series` (refuses what is not a regular volume), U-Net segmentation
(:class:`~pipelines.mri.segmentation.Segmenter`), pyradiomics per lesion
(:class:`~pipelines.mri.radiomics.RadiomicsExtractor`) and the SVM
(:class:`~pipelines.mri.classifier.MalignancyClassifier`). The models come from the weights registry (sha256
checked) and are loaded on first use, then kept on the instance for the worker's life.

Files written to the result folder: ``lesions.nii.gz`` (label map on the series grid, lesion i = label i),
``lesion-NN.nii.gz`` (each lesion's mask, cropped to its bounding box, physically placed), ``features.csv``
(every radiomics feature of every lesion, with the parameter file's sha256) and ``preview.png`` (the slice
through the largest lesion with its outline).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import SimpleITK as sitk
from pydantic import BaseModel, ConfigDict, Field

from pipelines.base import ModelRef, PipelineInput, PipelineResult
from pipelines.errors import InputError
from pipelines.models.registry import ModelEntry, ModelError, resolve
from pipelines.models.registry import entry as model_entry
from pipelines.mri.acquisition import read_acquisition
from pipelines.mri.domain import DeclarationError, DomainCheck, IntendedInput, check_series
from pipelines.mri.plausibility import IMPLAUSIBLE, Shape, lesion_reasons, mark_implausible

if TYPE_CHECKING:
    from pipelines.mri.volume import SeriesVolume

log = logging.getLogger(__name__)

LABEL_MAP = "lesions.nii.gz"
FEATURES = "features.csv"
PREVIEW = "preview.png"
STAGES = ("reading series", "segmenting", "radiomics, classifying", "writing results")
"""What a run's progress reports: the stage it starts, with the stages done before it of len(STAGES); the end
is reported as len(STAGES) of len(STAGES), stage ``done``."""


class MriTumourOptions(BaseModel):
    """Settings of ``pipelines.mri-tumour`` in the config."""

    model_config = ConfigDict(extra="forbid")

    segmenter_model: str = Field(default="mri-lesion-unet", description="segmenter name in the weights registry")
    classifier_model: str = Field(default="mri-lesion-svm", description="classifier name in the weights registry")
    manifest: Path | None = Field(default=None, description="manifest.json of retrained models (default: shipped ones)")
    radiomics_params: Path | None = Field(default=None, description="pyradiomics parameter file (default "
                                                            "config/radiomics.yaml)")
    min_lesion_ml: float = Field(default=0.5, gt=0, description="smaller connected components are not lesions")
    min_slices: int = Field(default=3, ge=2, description="series with fewer slices are refused")
    threshold: float | None = Field(default=None, gt=0, lt=1, description="lesion probability threshold (default: "
                                                                   "the model's)")
    max_lesions: int = Field(default=20, ge=1, description="radiomics and classification for the largest N lesions")
    torch_threads: int = Field(default=1, ge=1, description="CPU threads for the U-Net in each worker")


class MriTumourPipeline:
    name: ClassVar[str] = "mri-tumour"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[MriTumourOptions]] = MriTumourOptions

    def __init__(self, options: MriTumourOptions | None = None) -> None:
        self.options = options or MriTumourOptions()
        self._segmenter: tuple[str, Any] | None = None  # (sha256, Segmenter)
        self._classifier: tuple[str, Any] | None = None  # (sha256, MalignancyClassifier)
        self._extractor: Any | None = None

    # ------------------------------------------------------------------------------------ models

    def installed_models(self) -> tuple[ModelRef, ...]:
        """The models a run would use now, as the manifest names them (not loaded)."""
        manifest = self.options.manifest
        return (model_entry(self.options.segmenter_model, manifest).ref,
                model_entry(self.options.classifier_model, manifest).ref)

    def _entries(self) -> tuple[ModelEntry, ModelEntry]:
        manifest = self.options.manifest
        return (resolve(self.options.segmenter_model, manifest), resolve(self.options.classifier_model, manifest))

    def segmenter(self, entry: ModelEntry) -> Any:
        if self._segmenter is None or self._segmenter[0] != entry.sha256:
            import torch

            from pipelines.mri.segmentation import Segmenter, SegmenterConfig

            torch.set_num_threads(self.options.torch_threads)
            config = SegmenterConfig.from_dict(entry.info["config"])
            if self.options.threshold is not None:
                config = SegmenterConfig(**{**config.as_dict(), "threshold": self.options.threshold})
            self._segmenter = (entry.sha256, Segmenter.load(entry.path, config))
            log.info("loaded segmenter %s %s", entry.name, entry.version)
        return self._segmenter[1]

    def classifier(self, entry: ModelEntry) -> Any:
        if self._classifier is None or self._classifier[0] != entry.sha256:
            from pipelines.mri.classifier import load_entry

            self._classifier = (entry.sha256, load_entry(entry))
            log.info("loaded classifier %s %s", entry.name, entry.version)
        return self._classifier[1]

    def extractor(self) -> Any:
        if self._extractor is None:
            from pipelines.mri.radiomics import DEFAULT_PARAMS, RadiomicsExtractor

            self._extractor = RadiomicsExtractor(self.options.radiomics_params or DEFAULT_PARAMS)
        return self._extractor

    # ------------------------------------------------------------------------------------ run

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        from pipelines.mri.volume import load_series

        if inp.kind != "dicom-series":
            raise InputError(f"mri-tumour reads DICOM MR series, not {inp.kind} inputs")
        seconds: dict[str, float] = {}
        inp.progress(0, len(STAGES), STAGES[0])
        t = time.perf_counter()
        volume = load_series(inp.paths)
        if volume.slices < self.options.min_slices:
            raise InputError(f"{volume.slices} slices: this pipeline needs at least {self.options.min_slices}")
        seg_entry, clf_entry = self._entries()
        domain = _check_domain(seg_entry, inp.paths, volume)
        seconds["volume"] = time.perf_counter() - t
        inp.progress(1, len(STAGES), STAGES[1])
        t = time.perf_counter()
        segmentation = self.segmenter(seg_entry).segment(volume.image, self.options.min_lesion_ml)
        seconds["segmentation"] = time.perf_counter() - t
        log.info("series %s: %d lesion(s) found", volume.series_uid, len(segmentation.lesions))

        warnings = [*volume.warnings, *domain.cautions]
        lesions: list[dict[str, Any]] = []
        vectors: list[tuple[int, Any]] = []
        seconds["radiomics"] = seconds["classification"] = 0.0
        inp.progress(2, len(STAGES), STAGES[2])
        values = sitk.GetArrayViewFromImage(volume.image)
        label_array = sitk.GetArrayViewFromImage(segmentation.labels)
        for lesion in segmentation.lesions:
            item = _lesion_item(lesion)
            reasons = lesion_reasons(Shape(lesion.volume_ml, lesion.longest_diameter_mm), values, label_array,
                                     lesion.label, lesion.bbox_index)
            lesions.append(item)
            if lesion.label > self.options.max_lesions:
                item["label"] = "not classified"
            else:
                vector = self._characterise(item, volume.image, segmentation.labels, clf_entry, seconds, warnings)
                if vector is not None:
                    vectors.append((lesion.label, vector))
            mark_implausible(item, reasons)
        if len(segmentation.lesions) > self.options.max_lesions:
            warnings.append(f"{len(segmentation.lesions)} lesions; only the largest {self.options.max_lesions} "
                            "were classified")

        inp.progress(3, len(STAGES), STAGES[3])
        t = time.perf_counter()
        files = self._write(out_dir, volume.image, segmentation, vectors)
        seconds["writing"] = time.perf_counter() - t
        inp.progress(len(STAGES), len(STAGES), "done")
        summary = {
            "series_uid": volume.series_uid,
            "study_uid": volume.study_uid,
            "volume": volume.as_dict(),
            "lesion_count": len(lesions),
            "lesions": lesions,
            "series_summary": series_summary(lesions, segmentation.discarded, self.options.min_lesion_ml),
            "label_map_file": LABEL_MAP,
            "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        return PipelineResult(
            summary=summary,
            files=files,
            models=(seg_entry.ref, clf_entry.ref),
            warnings=tuple(warnings),
        )

    def _characterise(self, item: dict[str, Any], image: sitk.Image, labels: sitk.Image, clf_entry: ModelEntry,
                      seconds: dict[str, float], warnings: list[str]) -> Any:
        """Radiomics and malignancy of lesion ``item["index"]``, filled into ``item``; returns the vector."""
        from pipelines.mri.classifier import FeatureMismatchError
        from pipelines.mri.radiomics import RadiomicsError

        classifier = self.classifier(clf_entry)
        t = time.perf_counter()
        try:
            vector = self.extractor().extract(image, labels, item["index"])
        except RadiomicsError as exc:
            warnings.append(f"lesion {item['index']}: {exc}")
            item["label"] = "not classified"
            return None
        finally:
            seconds["radiomics"] += time.perf_counter() - t
        t = time.perf_counter()
        try:
            prediction = classifier.predict(vector)
        except FeatureMismatchError as exc:
            raise ModelError(f"classifier {clf_entry.name} {clf_entry.version}: {exc}") from exc
        seconds["classification"] += time.perf_counter() - t
        values = vector.as_dict()
        item.update({
            "malignancy_probability": round(prediction.probability, 4),
            "label": prediction.label,
            "features": {name: round(values[name], 6) for name in classifier.selected_features()},
            "radiomics_params_sha256": vector.params_sha256,
        })
        return vector

    def _write(self, out_dir: Path, image: sitk.Image, segmentation: Any, vectors: list[tuple[int, Any]],
               ) -> tuple[str, ...]:
        files = [LABEL_MAP]
        out_dir.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(segmentation.labels, str(out_dir / LABEL_MAP), useCompression=True)
        for lesion in segmentation.lesions:
            x, y, z, sx, sy, sz = lesion.bbox_index
            crop = sitk.RegionOfInterest(segmentation.labels, (sx, sy, sz), (x, y, z))
            mask = sitk.Cast(crop == lesion.label, sitk.sitkUInt8)
            name = f"lesion-{lesion.label:02d}.nii.gz"
            sitk.WriteImage(mask, str(out_dir / name), useCompression=True)
            files.append(name)
        if vectors:
            with (out_dir / FEATURES).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                first = vectors[0][1]
                writer.writerow(["lesion", "radiomics_params_sha256", *first.names])
                for label, vector in vectors:
                    writer.writerow([label, vector.params_sha256, *(repr(float(v)) for v in vector.values)])
            files.append(FEATURES)
        if _preview(out_dir / PREVIEW, image, segmentation.labels):
            files.append(PREVIEW)
        return tuple(files)


def _check_domain(entry: ModelEntry, paths: tuple[Path, ...], volume: SeriesVolume) -> DomainCheck:
    """The series against the segmenter's declared intended input; InputError with the reasons when it is not
    the model's (another body part, contrast, plane, voxel size)."""
    try:
        declared = IntendedInput.from_info(entry.info)
    except DeclarationError as exc:
        raise ModelError(f"segmenter {entry.name} {entry.version}: {exc}") from exc
    if declared is None:
        return DomainCheck(cautions=(f"segmenter {entry.name} {entry.version} declares no intended input; the "
                                     "series was not checked against it",))
    check = check_series(declared, read_acquisition(sorted(paths)[0]), volume.orientation, volume.spacing_mm,
                         sitk.GetArrayViewFromImage(volume.image))
    if not check.in_domain:
        raise InputError(f"not an input {entry.name} {entry.version} is for: " + ". ".join(check.refusals))
    return check


def _lesion_item(lesion: Any) -> dict[str, Any]:
    return {
        "index": lesion.label,
        "mask_file": f"lesion-{lesion.label:02d}.nii.gz",
        "volume_ml": round(lesion.volume_ml, 3),
        "longest_diameter_mm": round(lesion.longest_diameter_mm, 2),
        "centroid_lps_mm": [round(v, 2) for v in lesion.centroid_lps_mm],
        "voxels": lesion.voxels,
        "malignancy_probability": None,
        "label": None,
    }


def series_summary(lesions: list[dict[str, Any]], discarded: int, min_ml: float) -> dict[str, Any]:
    malignant = [les for les in lesions if les["label"] == "malignant"]
    implausible = sum(1 for les in lesions if les["label"] == IMPLAUSIBLE)
    probabilities = [les["malignancy_probability"] for les in lesions if les["malignancy_probability"] is not None]
    if not lesions:
        finding = "no lesion found"
    elif malignant:
        finding = f"{len(malignant)} lesion(s) classified malignant"
    else:
        finding = "lesions found, none classified malignant"
    if implausible:
        finding += f"; {implausible} implausible as a lesion (shape or fluid signal), for review"
    return {
        "finding": finding,
        "lesions": len(lesions),
        "malignant": len(malignant),
        "benign": sum(1 for les in lesions if les["label"] == "benign"),
        "implausible": implausible,
        "total_lesion_volume_ml": round(sum(les["volume_ml"] for les in lesions), 3),
        "largest_diameter_mm": max((les["longest_diameter_mm"] for les in lesions), default=None),
        "max_malignancy_probability": max(probabilities, default=None),
        "components_below_min_volume": discarded,
        "min_lesion_ml": min_ml,
    }


def _preview(path: Path, image: sitk.Image, labels: sitk.Image) -> bool:
    """Greyscale slice through the largest lesion (or the middle slice) with lesion outlines in red."""
    from PIL import Image

    array = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayViewFromImage(labels)
    per_slice = (label_array == 1).sum(axis=(1, 2)) if label_array.max() >= 1 else None
    k = int(np.argmax(per_slice)) if per_slice is not None and per_slice.any() else array.shape[0] // 2
    plane = array[k].astype(np.float32)
    lo, hi = np.percentile(plane, [1, 99.5])
    grey = (np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    inside = label_array[k] > 0
    edge = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1))
    rgb[edge] = (255, 40, 40)
    Image.fromarray(rgb).save(path)
    return True
