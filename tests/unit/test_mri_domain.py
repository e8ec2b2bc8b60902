"""The segmenter's declared intended input, checked against vendor-style series and their headers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.models.registry import entry
from pipelines.mri.acquisition import Acquisition, read_acquisition
from pipelines.mri.domain import DeclarationError, DomainCheck, IntendedInput, check_header, check_series
from pipelines.mri.volume import load_series
from pipelines.synthetic.mri_series import MRSeries
from pipelines.synthetic.vendor_series import (
    GE_BRAIN_T1,
    PHILIPS_T2_ABDOMEN,
    SAGITTAL,
    SIEMENS_T2_HASTE_ABDOMEN,
    VendorStyle,
)

DECLARED = IntendedInput.from_info(entry("mri-lesion-unet").info)
assert DECLARED is not None


def check(series: MRSeries) -> DomainCheck:
    assert DECLARED is not None
    volume = load_series(series.files)
    return check_series(DECLARED, read_acquisition(series.files[0]), volume.orientation, volume.spacing_mm,
                        sitk.GetArrayViewFromImage(volume.image))


def variant(style: VendorStyle, **changes: object) -> VendorStyle:
    """``style`` with header attributes (keyword=value) or spec fields (spec_<field>=value) changed."""
    header = dict(style.spec.header)
    spec_changes = {k.removeprefix("spec_"): v for k, v in changes.items() if k.startswith("spec_")}
    header.update({k: v for k, v in changes.items() if not k.startswith("spec_")})
    return VendorStyle(style.name, replace(style.spec, header=tuple(header.items()), **spec_changes))  # type: ignore[arg-type]


def test_philips_and_siemens_t2_abdomen_are_in_domain(tmp_path: Path) -> None:
    for style in (PHILIPS_T2_ABDOMEN, SIEMENS_T2_HASTE_ABDOMEN):
        result = check(style.write(tmp_path / style.name))
        assert result.in_domain and result.refusals == () and result.cautions == (), style.name


def test_ge_brain_t1_is_refused_for_body_part_contrast_and_plane(tmp_path: Path) -> None:
    result = check(GE_BRAIN_T1.write(tmp_path / "ge"))
    assert not result.in_domain
    assert result.refusals[0] == "BodyPartExamined BRAIN; this model is for ABDOMEN"
    assert result.refusals[1].startswith("not T2-weighted (names 'Sag 3D T1 BRAVO' / 'BRAIN ROUTINE', EchoTime "
                                         "3.172 ms, RepetitionTime 8.204 ms)")
    assert result.refusals[2].startswith("sagittal slices (tilted 90° from transverse)")


def test_t1_abdomen_is_refused_as_not_t2(tmp_path: Path) -> None:
    t1 = variant(PHILIPS_T2_ABDOMEN, ProtocolName="T1W_FFE_BH", EchoTime=4.6, RepetitionTime=150.0)
    result = check(t1.write(tmp_path / "t1"))
    assert len(result.refusals) == 1 and result.refusals[0].startswith(
        "not T2-weighted (names 'T1W_FFE_BH', EchoTime 4.6 ms, RepetitionTime 150 ms)")


def test_sagittal_abdomen_is_refused_for_its_plane(tmp_path: Path) -> None:
    sagittal = variant(SIEMENS_T2_HASTE_ABDOMEN, spec_orientation=SAGITTAL, ProtocolName="t2_haste_sag",
                       SeriesDescription="t2_haste_sag")
    result = check(sagittal.write(tmp_path / "sag"))
    assert result.refusals == ("sagittal slices (tilted 90° from transverse); this model is for axial slices, at "
                               "most 30° tilted",)


def test_voxels_far_outside_the_networks_grid_are_refused_and_beyond_training_cautioned(tmp_path: Path) -> None:
    coarse = variant(PHILIPS_T2_ABDOMEN, spec_pixel_spacing_mm=8.0, spec_slice_thickness_mm=10.0)
    result = check(coarse.write(tmp_path / "coarse"))
    assert result.refusals == ("pixel spacing 8 mm; this model takes 0.4–6 mm",
                               "slice spacing 10 mm; this model takes 1–8 mm")
    thick = variant(PHILIPS_T2_ABDOMEN, spec_slice_thickness_mm=6.0)
    result = check(thick.write(tmp_path / "thick"))
    assert result.in_domain
    assert result.cautions == ("slice spacing 6 mm is outside the 2.5–4 mm the model was trained on",)


def test_absent_body_part_is_allowed_and_vendor_spellings_are_recognised() -> None:
    assert DECLARED is not None
    base = Acquisition("MR", "", "", "T2W_TRA_BH SENSE", "Philips Medical Systems", "Ingenia", 80.0, 1300.0, "")
    assert check_header(DECLARED, base) == []
    for body_part in ("ABDOMEN", "LIVER", "ABDOMENPELVIS", "Abdomen"):
        assert check_header(DECLARED, replace(base, body_part=body_part)) == [], body_part
    assert check_header(DECLARED, replace(base, body_part="PELVIS")) == [
        "BodyPartExamined PELVIS; this model is for ABDOMEN"]


def test_t2_is_recognised_by_name_timing_or_acquisition_contrast_and_diffusion_is_not() -> None:
    assert DECLARED is not None
    unnamed = Acquisition("MR", "ABDOMEN", "", "", "GE MEDICAL SYSTEMS", "SIGNA", None, None, "")
    assert check_header(DECLARED, unnamed)[0].startswith(
        "not T2-weighted (no SeriesDescription or ProtocolName, EchoTime absent, RepetitionTime absent)")
    assert check_header(DECLARED, replace(unnamed, series_description="AX SSFSE")) == []
    assert check_header(DECLARED, replace(unnamed, echo_time_ms=85.0, repetition_time_ms=2000.0)) == []
    assert check_header(DECLARED, replace(unnamed, acquisition_contrast="T2")) == []
    assert check_header(DECLARED, replace(unnamed, echo_time_ms=85.0, repetition_time_ms=500.0)) != []
    diffusion = replace(unnamed, series_description="ep2d_diff_b50_800_tra", echo_time_ms=70.0,
                        repetition_time_ms=5000.0)
    assert check_header(DECLARED, diffusion) == [
        "'ep2d_diff_b50_800_tra' is not a T2-weighted anatomical series; this model is for one"]


def test_an_intensity_profile_unlike_the_training_series_is_a_caution(tmp_path: Path) -> None:
    assert DECLARED is not None
    series = PHILIPS_T2_ABDOMEN.write(tmp_path / "p")
    volume = load_series(series.files)
    values = np.zeros(sitk.GetArrayViewFromImage(volume.image).shape, np.float32)
    values[:, 30:60, 30:60] = 1000.0  # a bright block in an empty field of view
    result = check_series(DECLARED, read_acquisition(series.files[0]), volume.orientation, volume.spacing_mm,
                          values)
    assert result.in_domain
    assert result.cautions[0] == ("intensity profile: body fraction of the volume 0.10 is outside the training "
                                  "series' 0.35–0.65"), result.cautions


def test_malformed_declarations_are_refused_and_a_missing_one_is_none() -> None:
    info = dict(entry("mri-lesion-unet").info)
    assert IntendedInput.from_info({k: v for k, v in info.items() if k != "intended_input"}) is None
    broken = {**info["intended_input"], "spacing_mm": {"in_plane": {"trained": [4, 1], "accepted": [0, 9]},
                                                       "slice": {"trained": [1, 2], "accepted": [1, 2]}}}
    with pytest.raises(DeclarationError, match=r"spacing_mm.in_plane.trained: low 4.0 above high 1.0"):
        IntendedInput.from_info({"intended_input": broken})
    with pytest.raises(DeclarationError, match="not a regular expression"):
        IntendedInput.from_info({"intended_input": {**info["intended_input"],
                                                    "body_part": {"name": "ABDOMEN", "pattern": "(abd"}}})
    with pytest.raises(DeclarationError, match="KeyError"):
        IntendedInput.from_info({"intended_input": {"modality": "MR"}})


def test_enhanced_mr_timing_is_read_from_the_functional_groups() -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    echo, timing, shared_group = Dataset(), Dataset(), Dataset()
    echo.EffectiveEchoTime = 95.0
    timing.RepetitionTime = 3000.0
    shared_group.MREchoSequence = Sequence([echo])
    shared_group.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds = Dataset()
    ds.Modality = "MR"
    ds.BodyPartExamined = "LIVER"
    ds.SharedFunctionalGroupsSequence = Sequence([shared_group])
    acquisition = Acquisition.of(ds)
    assert (acquisition.echo_time_ms, acquisition.repetition_time_ms, acquisition.names) == (95.0, 3000.0, ())
    assert DECLARED is not None and check_header(DECLARED, acquisition) == []
