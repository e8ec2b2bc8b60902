"""The site-validation mark on every output: "model not validated at this site; trained on generated data".

The daemon decides whether a result's models are validated at its site (their weights have an acceptance
record, :mod:`pipelines.models.site_validation`) and hands the mark over in the result's ``result.json``
content under :data:`MARK_KEY` (None or absent: every model is validated). Here it is placed where a reader of
each output meets it first: the first line of the HTML and PDF report (:mod:`reports.document`), and a TEXT
item in the SR (TID 1500's document-level "Qualitative Evaluations" container, a "Comment" holding the mark,
which SR viewers list with the findings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    MeasurementReport,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.sequence import Sequence as DicomSequence

from reports import codes

MARK_KEY = "validation_mark"


def mark_of(doc: Mapping[str, Any]) -> str | None:
    """The mark a result's outputs carry (``doc`` is result.json's content), or None."""
    mark = doc.get(MARK_KEY)
    return str(mark) if mark else None


def mark_content(mark: str) -> ContainerContentItem:
    """The SR content that carries ``mark``: a "Qualitative Evaluations" container holding it as a comment."""
    container = ContainerContentItem(
        name=CodedConcept.from_code(codes.QUALITATIVE_EVALUATIONS),
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = DicomSequence([TextContentItem(
        name=CodedConcept.from_code(codes.COMMENT), value=mark, relationship_type=RelationshipTypeValues.CONTAINS,
    )])
    return container


def mark_report(report: MeasurementReport, mark: str | None) -> MeasurementReport:
    """``report`` with ``mark`` at the end of its root container (TID 1500 row 12); unchanged for None."""
    if mark:
        report[0].ContentSequence.append(mark_content(mark))
    return report
