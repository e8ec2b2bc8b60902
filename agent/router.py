"""Declarative routing: the first rule whose every condition holds names the pipeline for an input.

Rules come from the ``routing.rules`` section of the config, in order. An input no rule accepts is
recorded as ignored, with each rule's reason for refusing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from agent.config import MatchValue, Priority, RoutingRule
from agent.errors import ConfigError
from agent.records import Input


@dataclass(frozen=True)
class Route:
    pipeline: str
    rule: str
    priority: Priority


@dataclass(frozen=True)
class Ignored:
    reason: str


class Router:
    def __init__(self, rules: Sequence[RoutingRule]) -> None:
        self.rules = tuple(rules)

    def check_pipelines(self, known: Iterable[str]) -> None:
        """Fail when a rule names a pipeline nobody registered."""
        known = set(known)
        for rule in self.rules:
            if rule.pipeline not in known:
                raise ConfigError(
                    f"routing.rules[{rule.name}]: pipeline {rule.pipeline!r} is not registered "
                    f"(known: {', '.join(sorted(known))})"
                )

    def route(self, inp: Input) -> Route | Ignored:
        if not self.rules:
            return Ignored("no routing rules configured")
        refusals = []
        for rule in self.rules:
            why = refusal(rule, inp)
            if why is None:
                return Route(rule.pipeline, rule.name, rule.priority_level)
            refusals.append(f"{rule.name}: {why}")
        return Ignored("no rule matched (" + "; ".join(refusals) + ")")


def refusal(rule: RoutingRule, inp: Input) -> str | None:
    """Why ``rule`` does not accept ``inp``, or None when it does."""
    match = rule.match
    if match.kind is not None and match.kind != inp.kind.value:
        return f"kind is {inp.kind.value}, rule wants {match.kind}"
    if match.suffix is not None:
        suffix = PurePath(inp.key).suffix.lower()
        if suffix not in match.suffix:
            return f"suffix {suffix or '(none)'!r} not in {match.suffix}"
    if match.path_regex is not None and not re.search(match.path_regex, str(inp.path)):
        return f"path does not match {match.path_regex!r}"
    # every DICOM condition that fails, what the input is (Modality, SOP class…) before how much of it there is:
    # a presentation state of a whole-study push is refused as what it is, a short series also as short
    reasons = [why for keyword, expected in match.dicom.items()
               if (why := _keyword_refusal(keyword, expected, inp.attrs.get(keyword))) is not None]
    if match.dicom_any:
        alternatives = [_keyword_refusal(keyword, expected, inp.attrs.get(keyword))
                        for keyword, expected in match.dicom_any.items()]
        if all(why is not None for why in alternatives):
            reasons.append("none of: " + "; ".join(why for why in alternatives if why is not None))
    if match.min_slices is not None and slice_count(inp) < match.min_slices:
        reasons.append(f"{slice_count(inp)} slice(s), rule wants at least {match.min_slices}")
    return ", ".join(reasons) or None


def slice_count(inp: Input) -> int:
    """Images in a series: instances, or frames where the instances are multi-frame (Enhanced MR, WSI)."""
    try:
        frames = int(inp.attrs.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return inp.instance_count * max(frames, 1)


def _keyword_refusal(keyword: str, expected: MatchValue, actual: Any) -> str | None:
    if actual is None or actual == "":
        if isinstance(expected, dict) and expected.get("or_absent") is True:
            return None
        return f"{keyword} is absent"
    values = [str(v) for v in actual] if isinstance(actual, list) else [str(actual)]
    if isinstance(expected, dict) and "regex" in expected:
        pattern = str(expected["regex"])
        if any(re.search(pattern, v) for v in values):
            return None
        return f"{keyword} {_show(actual)} does not match {pattern!r}"
    if isinstance(expected, dict):
        return _range_refusal(keyword, expected, actual, values)
    wanted = [str(v) for v in expected] if isinstance(expected, list) else [str(expected)]
    # A multi-valued element (ImageType) matches when any of its values is wanted.
    if any(v in wanted for v in values):
        return None
    return f"{keyword} is {_show(actual)}, rule wants {' or '.join(wanted)}"


def _range_refusal(keyword: str, bounds: dict[str, str | float | bool], actual: Any, values: list[str]) -> str | None:
    low, high = bounds.get("min"), bounds.get("max")
    for value in values:
        try:
            number = float(value)
        except ValueError:
            continue
        if (low is None or number >= float(low)) and (high is None or number <= float(high)):
            return None
    wanted = " and ".join(f"{word} {float(b):g}" for word, b in (("at least", low), ("at most", high)) if b is not None)
    return f"{keyword} is {_show(actual)}, rule wants {wanted}"


def _show(value: Any) -> str:
    return repr("\\".join(map(str, value)) if isinstance(value, list) else str(value))
