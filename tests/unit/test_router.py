from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import Priority, RoutingRule
from agent.errors import ConfigError
from agent.records import Input, InputKind, InputState
from agent.router import Ignored, Route, Router


def series(attrs: dict[str, Any], count: int = 20) -> Input:
    now = time.time()
    return Input(1, InputKind.DICOM_SERIES, "1.2.3", Path("/storage/1/1.2.3"), "f", attrs, count,
                 InputState.RECEIVING, None, now, now, "1", "1.2.3")


def slide(name: str) -> Input:
    now = time.time()
    return Input(2, InputKind.SLIDE, f"/scans/{name}", Path(f"/scans/{name}"), "f", {}, 1,
                 InputState.RECEIVING, None, now, now)


def rules(*specs: dict[str, Any]) -> Router:
    return Router([RoutingRule.model_validate(s) for s in specs])


MRI = {"name": "mri", "pipeline": "mri-tumour", "match": {"kind": "dicom-series",
       "dicom": {"Modality": "MR", "SeriesDescription": {"regex": "(?i)t2|flair"}}, "min_slices": 10}}
STAT_SLIDES = {"name": "stat", "pipeline": "wsi-ctc", "priority": "stat",
               "match": {"kind": "slide", "path_regex": "/STAT/"}}
SLIDES = {"name": "slides", "pipeline": "wsi-ctc", "match": {"kind": "slide", "suffix": [".svs", ".NDPI"]}}


def test_first_matching_rule_wins_with_its_priority() -> None:
    router = rules(STAT_SLIDES, SLIDES)
    assert router.route(slide("x.svs")) == Route("wsi-ctc", "slides", Priority.ROUTINE)
    now = time.time()
    urgent = Input(3, InputKind.SLIDE, "/STAT/y.svs", Path("/scans/STAT/y.svs"), "f", {}, 1,
                   InputState.RECEIVING, None, now, now)
    assert router.route(urgent) == Route("wsi-ctc", "stat", Priority.STAT)


def test_suffixes_match_case_insensitively() -> None:
    assert isinstance(rules(SLIDES).route(slide("X.ndpi")), Route)


def test_unmatched_input_is_ignored_with_every_rules_reason() -> None:
    decision = rules(MRI, SLIDES).route(slide("notes.txt"))
    assert isinstance(decision, Ignored)
    assert "mri: kind is slide, rule wants dicom-series" in decision.reason
    assert "slides: suffix '.txt' not in ['.svs', '.ndpi']" in decision.reason


@pytest.mark.parametrize(
    ("attrs", "count", "why"),
    [
        ({"Modality": "CT", "SeriesDescription": "T2"}, 20, "Modality is 'CT', rule wants MR"),
        ({"Modality": "MR", "SeriesDescription": "T1 post"}, 20, "SeriesDescription 'T1 post' does not match"),
        ({"Modality": "MR"}, 20, "SeriesDescription is absent"),
        ({"Modality": "MR", "SeriesDescription": "ax t2"}, 3, "3 slice(s), rule wants at least 10"),
    ],
)
def test_dicom_conditions(attrs: dict[str, Any], count: int, why: str) -> None:
    decision = rules(MRI).route(series(attrs, count))
    assert isinstance(decision, Ignored)
    assert why in decision.reason


def test_matching_series_routes() -> None:
    decision = rules(MRI).route(series({"Modality": "MR", "SeriesDescription": "AX FLAIR"}))
    assert decision == Route("mri-tumour", "mri", Priority.ROUTINE)


def test_multivalued_element_matches_any_value_and_lists_of_wanted_values() -> None:
    router = rules({"name": "orig", "pipeline": "p",
                    "match": {"dicom": {"ImageType": "ORIGINAL", "Modality": ["MR", "CT"]}}})
    assert isinstance(router.route(series({"ImageType": ["ORIGINAL", "PRIMARY"], "Modality": "CT"})), Route)
    refused = router.route(series({"ImageType": ["DERIVED", "SECONDARY"], "Modality": "CT"}))
    assert isinstance(refused, Ignored)
    assert "ImageType is 'DERIVED\\\\SECONDARY', rule wants ORIGINAL" in refused.reason


def test_multiframe_series_counts_frames_as_slices() -> None:
    attrs = {"Modality": "MR", "SeriesDescription": "t2", "NumberOfFrames": 12}
    assert isinstance(rules(MRI).route(series(attrs, count=1)), Route)
    assert isinstance(rules(MRI).route(series({**attrs, "NumberOfFrames": 4}, count=1)), Ignored)


def test_no_rules_means_everything_is_ignored() -> None:
    assert rules().route(slide("a.svs")) == Ignored("no routing rules configured")


def test_unknown_pipeline_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"routing.rules\[mri\]: pipeline 'mri-tumour' is not registered"):
        rules(MRI).check_pipelines(["inspect"])
