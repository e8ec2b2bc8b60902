"""The HTML report of ``oncoagent evaluate``: a model measured on a lab's own labelled cases.

Takes ``report.json``'s content as plain data (:meth:`pipelines.evaluation.outcome.EvaluationOutcome.as_dict`),
so the page and the file carry the same numbers, and lays it out on one page: the models and their hashes,
the headline figures each with its bootstrap 95 % interval, then each section's text, table and figures
(PNG files beside the page). No patient data: cases are named by their folder or file name.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from reports.document import TEMPLATES, template_environment

TITLES = {"detector": "CTC/CTM detector", "segmenter": "MRI lesion segmenter", "classifier": "MRI lesion classifier",
          "mri": "MRI chain: segmenter → radiomics → classifier"}


def _figure(value: Any) -> str:
    """One estimate as ``0.912 (0.871–0.950)``."""
    if not isinstance(value, Mapping) or value.get("value") is None:
        return "n/a"
    low, high = value.get("ci95", (None, None))
    text = f"{value['value']:.3f}"
    return text if low is None or high is None else f"{text} ({low:.3f}–{high:.3f})"


def render_evaluation(report: Mapping[str, Any], created: str, command: str) -> str:
    css = files("reports").joinpath(TEMPLATES, "batch_summary.css").read_text(encoding="utf-8")
    env = template_environment()
    env.filters["estimate"] = _figure
    return env.get_template("evaluation.html.j2").render(
        report=report, title=TITLES.get(str(report["kind"]), str(report["kind"])), created=created, command=command,
        css=css,
    )
