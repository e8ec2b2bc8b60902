"""A model's intended input (its manifest's ``info.intended_input``) and the check of a series against it.

The segmenter declares what it was trained on: modality, body part, contrast (how a T2-weighted series is
recognised: its names, or its echo and repetition times), plane, voxel spacing and an intensity profile of
its training series. :func:`check_series` compares a loaded series with the declaration and returns

- refusals: the series is not what the model is for (another body part, contrast or plane, voxels far
  outside the range the network's grid can take); ``mri-tumour`` refuses it with these reasons, before any
  segmentation;
- cautions: within what the model accepts but outside what it was trained on (spacing beyond the training
  range, an intensity profile unlike its training series); they go into the result's warnings.

Names (SeriesDescription, ProtocolName) are matched with regular expressions (Python ``re``, searched), as
routing rules match them, so a routing rule can be written from the same declaration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.mri.acquisition import Acquisition


class DeclarationError(ValueError):
    """The manifest's ``intended_input`` is malformed."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    @classmethod
    def of(cls, value: Any, what: str) -> Range:
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise DeclarationError(f"intended_input.{what}: [low, high] ({exc})") from exc
        if not low <= high:
            raise DeclarationError(f"intended_input.{what}: low {low} above high {high}")
        return cls(low, high)

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low:g}–{self.high:g}"


@dataclass(frozen=True)
class SpacingLimits:
    trained: Range  # what the training series covered
    accepted: Range  # beyond this the network's grid is too far from the series' own: refused

    @classmethod
    def of(cls, value: Mapping[str, Any], what: str) -> SpacingLimits:
        return cls(Range.of(value.get("trained"), f"{what}.trained"), Range.of(value.get("accepted"),
                                                                                 f"{what}.accepted"))


@dataclass(frozen=True)
class IntensityProfile:
    """Of the training series, after the segmenter's own z-score (voxels above 10 % of the 99th percentile
    are the body): the fraction of the volume that is body, and the 1st/99th percentiles of the body's values."""

    foreground_fraction: Range
    zscore_p1: Range
    zscore_p99: Range
    measured_on: str

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> IntensityProfile:
        return cls(Range.of(value.get("foreground_fraction"), "intensity_profile.foreground_fraction"),
                   Range.of(value.get("zscore_p1"), "intensity_profile.zscore_p1"),
                   Range.of(value.get("zscore_p99"), "intensity_profile.zscore_p99"),
                   str(value.get("measured_on") or ""))


@dataclass(frozen=True)
class IntendedInput:
    modality: str
    body_part: str  # the name a refusal gives ("this model is for ABDOMEN")
    body_part_pattern: str  # BodyPartExamined values that are that body part (ABDOMEN, LIVER…)
    body_part_absent_allowed: bool
    weighting: str  # T2
    name_pattern: str  # SeriesDescription or ProtocolName of such a series
    exclude_name_pattern: str  # names of series that are not (diffusion, ADC maps…) whatever their timing
    min_echo_time_ms: float
    min_repetition_time_ms: float
    plane: str
    max_tilt_deg: float  # slice normal from the patient's head-foot axis
    in_plane_mm: SpacingLimits
    slice_mm: SpacingLimits
    intensity: IntensityProfile | None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> IntendedInput | None:
        """The declaration in a manifest entry's ``info``, None when it declares none."""
        raw = info.get("intended_input")
        if raw is None:
            return None
        try:
            body, contrast, plane, spacing = raw["body_part"], raw["contrast"], raw["plane"], raw["spacing_mm"]
            declared = cls(
                modality=str(raw["modality"]),
                body_part=str(body["name"]),
                body_part_pattern=_pattern(body["pattern"]),
                body_part_absent_allowed=bool(body.get("absent_allowed", False)),
                weighting=str(contrast["weighting"]),
                name_pattern=_pattern(contrast["name_pattern"]),
                exclude_name_pattern=_pattern(contrast.get("exclude_name_pattern") or "(?!)"),
                min_echo_time_ms=float(contrast["min_echo_time_ms"]),
                min_repetition_time_ms=float(contrast["min_repetition_time_ms"]),
                plane=str(plane["name"]),
                max_tilt_deg=float(plane["max_tilt_deg"]),
                in_plane_mm=SpacingLimits.of(spacing["in_plane"], "spacing_mm.in_plane"),
                slice_mm=SpacingLimits.of(spacing["slice"], "spacing_mm.slice"),
                intensity=IntensityProfile.of(raw["intensity_profile"]) if raw.get("intensity_profile") else None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DeclarationError(f"intended_input: {type(exc).__name__}: {exc}") from exc
        return declared


@dataclass(frozen=True)
class DomainCheck:
    refusals: tuple[str, ...] = ()
    cautions: tuple[str, ...] = ()

    @property
    def in_domain(self) -> bool:
        return not self.refusals


def check_series(declared: IntendedInput, acquisition: Acquisition, orientation: Sequence[float],
                 spacing_mm: tuple[float, float, float], values: npt.NDArray[Any] | None) -> DomainCheck:
    """``acquisition`` (the header), ``orientation`` (ImageOrientationPatient), ``spacing_mm`` (x, y, z) and the
    volume's ``values`` (None: the intensity profile is not checked) against ``declared``."""
    refusals = [*check_header(declared, acquisition), *_plane(declared, orientation)]
    spacing_refusals, cautions = _spacing(declared, spacing_mm)
    refusals += spacing_refusals
    if values is not None and declared.intensity is not None and not refusals:
        cautions += intensity_cautions(declared.intensity, values)
    return DomainCheck(tuple(refusals), tuple(cautions))


def check_header(declared: IntendedInput, acquisition: Acquisition) -> list[str]:
    """Modality, body part and contrast: the reasons the header says the series is not the model's."""
    reasons = []
    if acquisition.modality and acquisition.modality != declared.modality:
        reasons.append(f"Modality {acquisition.modality}; this model is for {declared.modality}")
    if acquisition.body_part:
        if not re.search(declared.body_part_pattern, acquisition.body_part):
            reasons.append(f"BodyPartExamined {acquisition.body_part}; this model is for {declared.body_part}")
    elif not declared.body_part_absent_allowed:
        reasons.append(f"no BodyPartExamined; this model is for {declared.body_part}")
    why = _not_weighted(declared, acquisition)
    if why:
        reasons.append(why)
    return reasons


def is_weighted(declared: IntendedInput, acquisition: Acquisition) -> bool:
    return _not_weighted(declared, acquisition) is None


def _not_weighted(declared: IntendedInput, acquisition: Acquisition) -> str | None:
    names = acquisition.names
    excluded = [n for n in names if re.search(declared.exclude_name_pattern, n)]
    if excluded:
        return f"{_quote(excluded)} is not a {declared.weighting}-weighted anatomical series; this model is for one"
    if any(re.search(declared.name_pattern, n) for n in names):
        return None
    if acquisition.acquisition_contrast == declared.weighting:
        return None
    te, tr = acquisition.echo_time_ms, acquisition.repetition_time_ms
    if te is not None and tr is not None and te >= declared.min_echo_time_ms and tr >= declared.min_repetition_time_ms:
        return None
    said = f"names {_quote(names)}" if names else "no SeriesDescription or ProtocolName"
    timing = (f"EchoTime {_ms(te)}, RepetitionTime {_ms(tr)}")
    return (f"not {declared.weighting}-weighted ({said}, {timing}); this model is for {declared.weighting}-weighted "
            f"series (EchoTime ≥ {declared.min_echo_time_ms:g} ms and RepetitionTime ≥ "
            f"{declared.min_repetition_time_ms:g} ms, or a name matching {declared.name_pattern!r})")


def _plane(declared: IntendedInput, orientation: Sequence[float]) -> list[str]:
    row, col = np.array(orientation[:3], dtype=float), np.array(orientation[3:6], dtype=float)
    normal = np.cross(row, col)
    normal /= max(float(np.linalg.norm(normal)), 1e-9)
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if tilt <= declared.max_tilt_deg:
        return []
    plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
    return [f"{plane} slices (tilted {tilt:.0f}° from transverse); this model is for {declared.plane} slices, "
            f"at most {declared.max_tilt_deg:g}° tilted"]


def _spacing(declared: IntendedInput, spacing_mm: tuple[float, float, float]) -> tuple[list[str], list[str]]:
    refusals: list[str] = []
    cautions: list[str] = []
    in_plane = max(spacing_mm[0], spacing_mm[1])
    finest = min(spacing_mm[0], spacing_mm[1])
    for what, value, limits in (("pixel spacing", in_plane, declared.in_plane_mm),
                                ("pixel spacing", finest, declared.in_plane_mm),
                                ("slice spacing", spacing_mm[2], declared.slice_mm)):
        if value not in limits.accepted:
            reason = f"{what} {value:.3g} mm; this model takes {limits.accepted} mm"
            if reason not in refusals:
                refusals.append(reason)
        elif value not in limits.trained:
            caution = f"{what} {value:.3g} mm is outside the {limits.trained} mm the model was trained on"
            if caution not in cautions:
                cautions.append(caution)
    return refusals, cautions


def intensity_profile(values: npt.NDArray[Any]) -> tuple[float, float, float]:
    """Foreground fraction and the 1st/99th percentiles of the foreground after the segmenter's z-score."""
    from pipelines.mri.segmentation import foreground, zscore

    array = np.asarray(values, dtype=np.float32)
    body = foreground(array)
    z = zscore(array)[body] if int(body.sum()) >= 10 else zscore(array).ravel()
    p1, p99 = np.percentile(z, [1, 99])
    return int(body.sum()) / max(array.size, 1), float(p1), float(p99)


def intensity_cautions(profile: IntensityProfile, values: npt.NDArray[Any]) -> list[str]:
    fraction, p1, p99 = intensity_profile(values)
    cautions = []
    for what, value, expected in (("body fraction of the volume", fraction, profile.foreground_fraction),
                                  ("z-scored 1st percentile", p1, profile.zscore_p1),
                                  ("z-scored 99th percentile", p99, profile.zscore_p99)):
        if value not in expected:
            cautions.append(f"intensity profile: {what} {value:.2f} is outside the training series' {expected}")
    return cautions


def _pattern(value: Any) -> str:
    text = str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise DeclarationError(f"intended_input: {text!r} is not a regular expression ({exc})") from exc
    return text


def _quote(names: Sequence[str]) -> str:
    return " / ".join(repr(n) for n in names)


def _ms(value: float | None) -> str:
    return "absent" if value is None else f"{value:g} ms"
