"""The mri-tumour pipeline in process with the shipped models: results, files, refusals, model checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipelines import registry
from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import InputError, PipelineOptionsError
from pipelines.models.registry import ModelError, record, resolve
from pipelines.mri.pipeline import MriTumourOptions, MriTumourPipeline
from pipelines.mri.segmentation import dice
from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, write_mr_series
from tests.conftest import shared

# seeds from 900_000 up are never used for training (see pipelines/models/mri/*.card.md)
SPEC = MRSeriesSpec(rows=192, columns=192, slices=40, pixel_spacing_mm=1.9, slice_thickness_mm=3.5, lesions=2,
                    labels=("benign", "malignant"), seed=900_101)


@pytest.fixture(scope="module")
def pipeline() -> MriTumourPipeline:
    return MriTumourPipeline()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> MRSeries:
    return write_mr_series(tmp_path_factory.mktemp("series") / "s", SPEC)


@pytest.fixture(scope="module")
def outcome(pipeline: MriTumourPipeline, series: MRSeries, tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[PipelineResult, Path]:
    out = tmp_path_factory.mktemp("out")
    return run(pipeline, series.files, out), out


def run(pipeline: MriTumourPipeline, files: list[Path], out: Path) -> PipelineResult:
    inp = PipelineInput("dicom-series", "key", tuple(files), {}, "1.2", "1.2.3")
    return pipeline.run(inp, out)


def test_lesions_match_the_truth_in_place_size_and_class(outcome: tuple[PipelineResult, Path],
                                                        series: MRSeries) -> None:
    result, out = outcome
    summary = result.summary
    assert summary["lesion_count"] == 2 and summary["series_uid"] == series.series_uid
    labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
    predicted = sitk.GetArrayFromImage(labels)
    assert predicted.shape == series.lesion_mask.shape
    assert dice(predicted, series.lesion_mask) > 0.85
    voxel_ml = 1.9 * 1.9 * 3.5 / 1000
    true_labels = {lesion.index: lesion.label for lesion in series.lesions}
    assert true_labels == {1: "benign", 2: "malignant"}  # as SPEC forces them
    found_labels: dict[int, str] = {}
    probability: dict[int, float] = {}
    for lesion in summary["lesions"]:
        truth_ids, counts = np.unique(series.lesion_mask[predicted == lesion["index"]], return_counts=True)
        truth = int(truth_ids[np.argmax(counts)])
        assert truth > 0, f"lesion {lesion['index']} lies on no true lesion"
        truth_ml = float((series.lesion_mask == truth).sum()) * voxel_ml
        assert lesion["volume_ml"] == pytest.approx(truth_ml, rel=0.2)
        assert 0 < lesion["longest_diameter_mm"] < 80
        assert 0.0 <= lesion["malignancy_probability"] <= 1.0
        assert lesion["label"] in {"benign", "malignant"}
        assert len(lesion["features"]) >= 5 and lesion["radiomics_params_sha256"]
        found_labels[truth] = lesion["label"]
        probability[truth] = lesion["malignancy_probability"]
    assert found_labels == true_labels  # each found lesion is the true one, classified as the truth has it
    assert probability[2] > probability[1]  # the malignant one is the more likely malignant
    assert summary["series_summary"]["lesions"] == 2
    assert summary["series_summary"]["total_lesion_volume_ml"] == pytest.approx(
        sum(les["volume_ml"] for les in summary["lesions"]), abs=0.01)
    assert set(summary["stage_seconds"]) == {"volume", "segmentation", "radiomics", "classification", "writing"}


def test_files_are_written_and_listed(outcome: tuple[PipelineResult, Path], series: MRSeries) -> None:
    result, out = outcome
    assert set(result.files) == {"lesions.nii.gz", "lesion-01.nii.gz", "lesion-02.nii.gz", "features.csv",
                                 "preview.png"}
    assert all((out / f).is_file() for f in result.files)
    lesion = sitk.ReadImage(str(out / "lesion-01.nii.gz"))
    labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
    # the cropped mask sits where lesion 1 is in the full label map
    centre = lesion.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in lesion.GetSize()])
    index = labels.TransformPhysicalPointToIndex(centre)
    assert sitk.GetArrayViewFromImage(lesion).sum() == (sitk.GetArrayViewFromImage(labels) == 1).sum()
    assert labels.GetOrigin() == pytest.approx(tuple(float(v) for v in
                                                     pydicom.dcmread(series.files[0]).ImagePositionPatient))
    assert 0 <= index[2] < series.volume.shape[0]
    with (out / "features.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["lesion", "radiomics_params_sha256"] and len(rows) == 3 and len(rows[0]) > 1000
    assert rows[1][1] == result.summary["lesions"][0]["radiomics_params_sha256"]


def test_every_model_used_is_recorded(outcome: tuple[PipelineResult, Path]) -> None:
    result, _ = outcome
    seg, clf = resolve("mri-lesion-unet"), resolve("mri-lesion-svm")
    assert [m.as_dict() for m in result.models] == [seg.ref.as_dict(), clf.ref.as_dict()]
    json.dumps(result.summary)  # result.json must be able to hold it


def test_models_are_loaded_once_per_instance(pipeline: MriTumourPipeline, series: MRSeries, tmp_path: Path,
                                            outcome: tuple[PipelineResult, Path]) -> None:
    segmenter = pipeline.segmenter(resolve("mri-lesion-unet"))
    classifier = pipeline.classifier(resolve("mri-lesion-svm"))
    small = write_mr_series(tmp_path / "small", MRSeriesSpec(rows=96, columns=96, slices=12, pixel_spacing_mm=3.5,
                                                            lesions=1, seed=900_102))
    run(pipeline, small.files, tmp_path / "o")
    assert pipeline.segmenter(resolve("mri-lesion-unet")) is segmenter
    assert pipeline.classifier(resolve("mri-lesion-svm")) is classifier


def test_series_without_lesions_is_reported_as_such(pipeline: MriTumourPipeline, tmp_path: Path) -> None:
    # a clinical in-plane resolution: on coarse ones (96 x 96 at 3.5 mm and more) the shipped U-Net can take
    # a bright spleen or bowel loop for a lesion (see its model card)
    series = write_mr_series(tmp_path / "clean", MRSeriesSpec(rows=192, columns=192, slices=36, pixel_spacing_mm=1.9,
                                                             slice_thickness_mm=4.0, lesions=0, seed=900_103))
    result = run(pipeline, series.files, tmp_path)
    assert result.summary["lesion_count"] == 0
    assert result.summary["series_summary"]["finding"] == "no lesion found"
    assert "features.csv" not in result.files and "lesions.nii.gz" in result.files


# ----------------------------------------------------------------------------------------- refusals


def test_bad_inputs_fail_with_a_reason(pipeline: MriTumourPipeline, series: MRSeries, tmp_path: Path) -> None:
    cases: dict[str, tuple[list[Path], str]] = {}
    ct = tmp_path / "ct"
    ct.mkdir()
    for f in series.files[:4]:
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.save_as(ct / f.name)
    cases["non-MR"] = (sorted(ct.iterdir()), "modality CT: this pipeline reads MR series only")
    cases["single slice"] = ([series.files[0]], r"single-slice series \(1 image\)")
    cases["two slices"] = (series.files[:2], "2 slices: this pipeline needs at least 3")
    cases["gap"] = ([f for i, f in enumerate(series.files) if i != 10], r"missing slice\(s\): a gap of 7.00 mm")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(series.folder, corrupt)
    (corrupt / "IM0005.dcm").write_bytes(b"\x00" * 200)
    cases["corrupt"] = (sorted(corrupt.iterdir()), "IM0005.dcm: not a readable DICOM file")
    for name, (files, reason) in cases.items():
        with pytest.raises(InputError, match=reason):
            run(pipeline, files, tmp_path / name)
    with pytest.raises(InputError, match="reads DICOM MR series, not slide inputs"):
        pipeline.run(PipelineInput("slide", "x.svs", (tmp_path / "x.svs",)), tmp_path)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("mri/ge_dwi_series", r"repeated slice positions: 14 images at 2 position\(s\) along the slice normal"),
        ("mri/philips_mr700_series", r"projection images \(ImageType DERIVED\\SECONDARY\\PROJECTION IMAGE"),
        ("mri/pydicom_emri_small.dcm", r"multi-frame object with 10 frame\(s\) but 0 per-frame functional group"),
        ("mri/MR_small.dcm", r"single-slice series \(1 image\)"),
        ("broken/pydicom_no_meta.dcm", r"pydicom_no_meta.dcm: not a readable DICOM file"),
    ],
)
def test_real_vendor_files_are_refused_with_a_precise_reason(pipeline: MriTumourPipeline, tmp_path: Path,
                                                            path: str, reason: str) -> None:
    source = shared(path)
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    with pytest.raises(InputError, match=reason):
        run(pipeline, files, tmp_path)


# ----------------------------------------------------------------------------------------- models, options


def test_options_are_validated_through_the_registry() -> None:
    assert "mri-tumour" in registry.names()
    assert registry.version("mri-tumour") == MriTumourPipeline.version
    validated = registry.validate_options({"mri-tumour": {"min_lesion_ml": 1.5, "torch_threads": 2}})
    assert isinstance(validated["mri-tumour"], MriTumourOptions)
    assert validated["mri-tumour"].min_lesion_ml == 1.5
    with pytest.raises(PipelineOptionsError, match=r"pipelines.mri-tumour.min_lesion_mm: unknown key"):
        registry.validate_options({"mri-tumour": {"min_lesion_mm": 3}})
    with pytest.raises(PipelineOptionsError, match=r"pipelines.mri-tumour.min_slices: expected"):
        registry.validate_options({"mri-tumour": {"min_slices": 1}})


def test_swapped_weights_are_refused(series: MRSeries, tmp_path: Path) -> None:
    seg, clf = resolve("mri-lesion-unet"), resolve("mri-lesion-svm")
    manifest = tmp_path / "manifest.json"
    for entry in (seg, clf):
        copy = tmp_path / entry.path.name
        shutil.copy(entry.path, copy)
        record(entry.name, entry.version, copy, entry.info, manifest=manifest)
    (tmp_path / seg.path.name).write_bytes(b"not the weights")
    pipeline = MriTumourPipeline(MriTumourOptions(manifest=manifest))
    with pytest.raises(ModelError, match="refusing to load it"):
        run(pipeline, series.files, tmp_path / "out")
