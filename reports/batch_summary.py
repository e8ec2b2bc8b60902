"""The HTML summary of a batch run, written when its last job ends: what it read, how far it got, what changed.

Takes the run as plain data (``agent.batch_summary.run_document``: counts, verdicts, the discordant results with
their reasons, the failures with theirs) and lays it out on one self-contained page, for the reviewers who
look at what a night's reprocessing changed. No patient data: inputs are named by their path in storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from reports.document import TEMPLATES, template_environment


def render_batch_summary(run: Mapping[str, Any]) -> str:
    css = files("reports").joinpath(TEMPLATES, "batch_summary.css").read_text(encoding="utf-8")
    return template_environment().get_template("batch_summary.html.j2").render(run=run, css=css)
