"""Training cases: generated ones match their DICOM files; case folders round-trip and are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.errors import InputError
from pipelines.mri.cases import Case, case_from_spec, random_spec, read_case_folder, write_case_folder
from pipelines.mri.volume import load_series
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series


def small_case(case_id: str, seed: int, lesions: int = 1) -> Case:
    return case_from_spec(MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=2.0, lesions=lesions,
                                       labels=("benign", "malignant")[:lesions], seed=seed), case_id)


def test_generated_case_is_on_the_grid_of_its_dicom_series(tmp_path: Path) -> None:
    spec = MRSeriesSpec(rows=48, columns=40, slices=10, lesions=1, seed=31)
    case = case_from_spec(spec)
    series = write_mr_series(tmp_path / "s", spec)
    volume = load_series(series.files)
    assert np.array_equal(sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(volume.image))
    for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(case.image, getter)() == pytest.approx(getattr(volume.image, getter)())
        assert getattr(case.labels, getter)() == pytest.approx(getattr(volume.image, getter)())
    assert case.case_id == "gen-31" and set(case.lesion_classes) == {1}


def test_random_specs_are_plausible_and_seeded() -> None:
    specs = [random_spec(s) for s in range(30)]
    assert specs[3] == random_spec(3)
    for spec in specs:
        fov_mm = spec.rows * spec.pixel_spacing_mm
        assert 330 <= fov_mm <= 420 and 1 <= spec.lesions <= 3
        assert 100 <= spec.slices * spec.slice_thickness_mm <= 200
    assert len({(s.rows, s.slice_thickness_mm) for s in specs}) > 3


def test_case_folder_round_trip(tmp_path: Path) -> None:
    cases = [small_case("a", 1, lesions=2), small_case("b", 2)]
    root = write_case_folder(cases, tmp_path / "cases")
    assert (root / "labels.csv").read_text().splitlines()[0] == "case,lesion,label"
    loaded = read_case_folder(root)
    assert [c.case_id for c in loaded] == ["a", "b"]
    assert loaded[0].lesion_classes == {1: "benign", 2: "malignant"}
    assert np.array_equal(sitk.GetArrayFromImage(loaded[0].labels), sitk.GetArrayFromImage(cases[0].labels))
    assert loaded[1].image.GetOrigin() == pytest.approx(cases[1].image.GetOrigin())


def test_case_folder_problems_are_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder of cases"):
        read_case_folder(tmp_path / "absent")
    (tmp_path / "empty" / "c1").mkdir(parents=True)
    with pytest.raises(InputError, match=r"no case folders with image\.\* and mask\.\*"):
        read_case_folder(tmp_path / "empty")
    root = write_case_folder([small_case("a", 1)], tmp_path / "bad-labels")
    (root / "labels.csv").write_text("case,lesion,label\na,1,suspicious\n")
    with pytest.raises(InputError, match="line 2: label 'suspicious' is not one of benign, malignant"):
        read_case_folder(root)
