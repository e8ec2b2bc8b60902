"""The default MR routing rule on the headers vendors write, and the rule conditions it is written with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from agent.config import RoutingRule, Settings
from agent.config.loader import PROJECT_CONFIG, load_settings
from agent.config.routing import MRI_BODY_PART, MRI_T2_MIN_ECHO_TIME_MS, MRI_T2_NAME
from agent.records import Input, InputKind, InputState
from agent.router import Ignored, Route, Router
from dicom_node.storage import routing_attrs
from pipelines.models.registry import entry
from pipelines.mri.domain import IntendedInput
from pipelines.synthetic.vendor_series import GE_BRAIN_T1, PHILIPS_T2_ABDOMEN, SIEMENS_T2_HASTE_ABDOMEN
from tests.conftest import shared


def series_input(files: list[Path]) -> Input:
    """The input the daemon records for these files: the first instance's routing attributes."""
    now = time.time()
    attrs = routing_attrs(pydicom.dcmread(sorted(files)[0], stop_before_pixels=True))
    return Input(1, InputKind.DICOM_SERIES, "1.2.3", files[0].parent, "f", attrs, len(files),
                 InputState.RECEIVING, None, now, now, "1", "1.2.3")


def attrs_input(attrs: dict[str, Any], count: int = 20) -> Input:
    now = time.time()
    return Input(1, InputKind.DICOM_SERIES, "1.2.3", Path("/s"), "f", attrs, count, InputState.RECEIVING, None,
                 now, now, "1", "1.2.3")


@pytest.fixture(params=["built-in defaults", "config/oncoagent.yaml", "config/oncoagent.production.yaml"])
def router(request: pytest.FixtureRequest) -> Router:
    if request.param == "built-in defaults":
        return Router(Settings().routing.rules)
    path = PROJECT_CONFIG if request.param == "config/oncoagent.yaml" else PROJECT_CONFIG.with_name(
        "oncoagent.production.yaml")
    return Router(load_settings(path, environ={}).settings.routing.rules)


def test_philips_and_siemens_t2_abdomen_go_to_mri_tumour(router: Router, tmp_path: Path) -> None:
    for style in (PHILIPS_T2_ABDOMEN, SIEMENS_T2_HASTE_ABDOMEN):
        decision = router.route(series_input(style.write(tmp_path / style.name).files))
        assert isinstance(decision, Route) and decision.pipeline == "mri-tumour", (style.name, decision)
    philips = series_input(PHILIPS_T2_ABDOMEN.write(tmp_path / "p2").files)
    assert "SeriesDescription" not in philips.attrs and philips.attrs["ProtocolName"] == "T2W_TRA_BH SENSE"


def test_ge_brain_t1_is_not_sent_to_mri_tumour(router: Router, tmp_path: Path) -> None:
    decision = router.route(series_input(GE_BRAIN_T1.write(tmp_path / "ge").files))
    assert isinstance(decision, Ignored)
    assert "BodyPartExamined 'BRAIN' does not match '(?i)abd|liver|hepat'" in decision.reason


def test_a_real_ge_brain_series_header_is_not_sent_to_mri_tumour(router: Router) -> None:
    files = sorted(shared("mri/ge_dwi_series").iterdir())  # GE SIGNA Pioneer, "Ax DWI TENSOR R2", BRAIN
    decision = router.route(series_input(files))
    assert not (isinstance(decision, Route) and decision.pipeline == "mri-tumour"), decision


def test_the_default_rule_is_the_segmenters_declared_intended_input() -> None:
    declared = IntendedInput.from_info(entry("mri-lesion-unet").info)
    assert declared is not None
    declared_rule = (declared.body_part_pattern, declared.name_pattern, declared.min_echo_time_ms)
    assert declared_rule == (MRI_BODY_PART, MRI_T2_NAME, MRI_T2_MIN_ECHO_TIME_MS)
    assert declared.body_part_absent_allowed
    (rule,) = [r for r in Settings().routing.rules if r.pipeline == "mri-tumour"]
    assert rule.match.dicom["BodyPartExamined"] == {"regex": MRI_BODY_PART, "or_absent": True}
    assert rule.match.dicom_any["ProtocolName"] == {"regex": MRI_T2_NAME}


def rule(match: dict[str, Any]) -> Router:
    return Router([RoutingRule.model_validate({"name": "r", "pipeline": "mri-tumour", "match": match})])


def test_or_absent_accepts_a_missing_or_empty_keyword_but_not_another_value() -> None:
    router = rule({"dicom": {"BodyPartExamined": {"regex": "(?i)abd", "or_absent": True}}})
    assert isinstance(router.route(attrs_input({})), Route)
    assert isinstance(router.route(attrs_input({"BodyPartExamined": ""})), Route)
    assert isinstance(router.route(attrs_input({"BodyPartExamined": "Abdomen"})), Route)
    refused = router.route(attrs_input({"BodyPartExamined": "BRAIN"}))
    assert refused == Ignored("no rule matched (r: BodyPartExamined 'BRAIN' does not match '(?i)abd')")
    strict = rule({"dicom": {"BodyPartExamined": {"regex": "(?i)abd"}}})
    assert strict.route(attrs_input({})) == Ignored("no rule matched (r: BodyPartExamined is absent)")


def test_numeric_ranges_match_numbers_within_their_bounds() -> None:
    router = rule({"dicom": {"EchoTime": {"min": 60, "max": 200}}})
    assert isinstance(router.route(attrs_input({"EchoTime": "80"})), Route)
    assert isinstance(router.route(attrs_input({"EchoTime": 60.0})), Route)
    assert router.route(attrs_input({"EchoTime": "3.172"})) == Ignored(
        "no rule matched (r: EchoTime is '3.172', rule wants at least 60 and at most 200)")
    assert isinstance(router.route(attrs_input({"EchoTime": "250"})), Ignored)


def test_dicom_any_needs_one_of_its_conditions_and_names_them_all_when_none_holds() -> None:
    router = rule({"dicom_any": {"SeriesDescription": {"regex": "(?i)t2"}, "ProtocolName": {"regex": "(?i)t2"}}})
    assert isinstance(router.route(attrs_input({"ProtocolName": "T2W_TRA_BH SENSE"})), Route)
    assert isinstance(router.route(attrs_input({"SeriesDescription": "Ax T2 SSFSE", "ProtocolName": "ABD"})), Route)
    assert router.route(attrs_input({"SeriesDescription": "Sag 3D T1 BRAVO"})) == Ignored(
        "no rule matched (r: none of: SeriesDescription 'Sag 3D T1 BRAVO' does not match '(?i)t2'; ProtocolName is "
        "absent)")


@pytest.mark.parametrize(("condition", "why"), [
    ({"regex": "a", "min": 1}, "{min: X, max: Y}"),
    ({"or_absent": True}, "{min: X, max: Y}"),
    ({"regex": "(a"}, "valid regular expression"),
    ({"min": "sixty"}, "min is a number"),
    ({"regex": "a", "or_absent": "yes"}, "or_absent is true or false"),
])
def test_malformed_conditions_are_refused(condition: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        RoutingRule.model_validate({"name": "r", "pipeline": "p", "match": {"dicom_any": {"EchoTime": condition}}})
