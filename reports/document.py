"""The human-readable report: Jinja2 templates → ``report.html``, and ``report.pdf`` through WeasyPrint.

:func:`build_document` gathers what a reader needs (case header, the headline finding, a findings table,
figures, models with versions and weights hashes, processing times, the DICOM objects that were produced,
warnings, the research-use notice, and first of all the site-validation mark while a model is not validated at
this site: :mod:`reports.validation_mark`) into a :class:`ReportDocument`; :func:`render_html` fills the template;
:func:`write_pdf` lays it out as PDF (A4) with the figures embedded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2

from reports.context import StudyContext
from reports.figures import Figure
from reports.findings import (
    INSPECT_PIPELINE,
    MRI_PIPELINE,
    WSI_PIPELINE,
    Algorithm,
    MriFindings,
    SlideFindings,
)
from reports.validation_mark import mark_of

log = logging.getLogger(__name__)

TEMPLATES = "templates"  # package data of ``reports``, found through importlib.resources
RESEARCH_NOTICE = (
    "For research use only. Not for use in diagnostic procedures. The findings were produced by an "
    "algorithm and have not been reviewed by a physician; they must not be used for patient management "
    "without independent confirmation."
)
TITLES = {
    WSI_PIPELINE: "Circulating tumour cells on a whole-slide image",
    MRI_PIPELINE: "MRI lesion analysis",
    INSPECT_PIPELINE: "Input inspection",
}


@dataclass(frozen=True)
class Row:
    """A line of a findings table: a label and its cells."""

    label: str
    cells: tuple[str, ...]
    emphasis: bool = False


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    note: str = ""


@dataclass(frozen=True)
class DicomObject:
    """A DICOM object written with the report, for the reader's record."""

    file: str
    sop_class: str
    sop_instance_uid: str
    role: str


@dataclass(frozen=True)
class ReportDocument:
    title: str
    headline: str
    headline_level: str  # "high", "medium", "low" or "none": how loudly the headline is shown
    case: tuple[tuple[str, str], ...]
    tables: tuple[Table, ...]
    figures: tuple[Figure, ...]
    models: tuple[Algorithm, ...]
    timings: tuple[tuple[str, str], ...]
    objects: tuple[DicomObject, ...] = ()
    warnings: tuple[str, ...] = ()
    notice: str = RESEARCH_NOTICE
    generated: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    pipeline: str = ""
    pipeline_version: str = ""
    signed: tuple[str, ...] = ()  # a reviewed result: who signed it, when, and their note (reports.verified)
    validation_mark: str | None = None  # "model not validated at this site; …": the report's first line


# ------------------------------------------------------------------------------------------ content


def build_document(
    doc: Mapping[str, Any],
    context: StudyContext | None,
    input_name: str,
    figures: Sequence[Figure],
    objects: Sequence[DicomObject] = (),
    warnings: Sequence[str] = (),
) -> ReportDocument:
    """The report of a result (``doc`` is result.json's content)."""
    pipeline = str(doc.get("pipeline", ""))
    summary = doc.get("summary") or {}
    if pipeline == WSI_PIPELINE:
        headline, level, tables = _slide_content(SlideFindings.from_summary(summary))
    elif pipeline == MRI_PIPELINE:
        headline, level, tables = _mri_content(MriFindings.from_summary(summary))
    else:
        headline, level, tables = _inspect_content(summary)
    return ReportDocument(
        title=TITLES.get(pipeline, f"{pipeline} result"),
        headline=headline,
        headline_level=level,
        case=_case(doc, context, input_name),
        tables=tables,
        figures=tuple(figures),
        models=tuple(Algorithm.from_doc(m) for m in doc.get("models") or ()),
        timings=_timings(doc),
        objects=tuple(objects),
        warnings=tuple(dict.fromkeys([*(doc.get("warnings") or ()), *warnings])),
        pipeline=pipeline,
        pipeline_version=str(doc.get("pipeline_version", "")),
        validation_mark=mark_of(doc),
    )


def input_name(kind: str, key: str, headers: Sequence[Any]) -> str:
    """How the report names its input: a slide by its file name, a DICOM series by modality and description."""
    if kind != "dicom-series":
        return Path(key).name
    first = headers[0] if headers else None
    described = " ".join(str(first.get(k) or "") for k in ("Modality", "SeriesDescription")) if first else ""
    return f"DICOM series {described.strip()}".strip()


def _case(doc: Mapping[str, Any], context: StudyContext | None, input_name: str) -> tuple[tuple[str, str], ...]:
    rows: list[tuple[str, str]] = []
    if context is not None:
        rows += [
            ("Patient", context.patient_name.replace("^", " ").strip() or "—"),
            ("Patient ID", context.patient_id or "—"),
            ("Birth date / sex", f"{_date(context.patient_birth_date) or '—'} / {context.patient_sex or '—'}"),
            ("Accession", context.accession_number or "—"),
            ("Study date", _date(context.study_date) or "—"),
            ("Study UID", context.study_uid),
        ]
        if not context.from_dicom:
            rows.append(("Context from", f"slide {context.source} mapping"))
    else:
        rows.append(("Patient", "no patient/study context for this input"))
    inp = doc.get("input") or {}
    if inp.get("series_uid"):
        rows.append(("Series UID", str(inp["series_uid"])))
    rows.append(("Input", f"{input_name} ({inp.get('kind', '?')}, {inp.get('files', '?')} file(s))"))
    if doc.get("job_id") is not None:
        rows.append(("Job", str(doc["job_id"])))
    if doc.get("supersedes_job_id") is not None:
        rows.append(("Supersedes job", str(doc["supersedes_job_id"])))
    rows.append(("Analysed", f"{doc.get('started_at', '?')} with {doc.get('pipeline')} {doc.get('pipeline_version')}"))
    return tuple(rows)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _slide_content(f: SlideFindings) -> tuple[str, str, tuple[Table, ...]]:
    if not f.detections and f.ctc_count == 0 and f.ctm_count == 0:
        headline = (f"No circulating tumour cells (CTC) or clusters (CTM) detected on "
                    f"{f.tissue_area_mm2:.2f} mm² of tissue.")
    else:
        headline = (f"{f.ctc_count} CTC and {f.ctm_count} CTM detected on {f.tissue_area_mm2:.2f} mm² of tissue; "
                    f"triage priority {f.priority.upper()} (score {f.priority_score:.2f}).")
    rows = (
        Row("Circulating tumour cells (CTC)", (str(f.ctc_count), _number(f.ctc_density_per_mm2))),
        Row("Circulating tumour microemboli (CTM)", (str(f.ctm_count), _number(f.ctm_density_per_mm2))),
        Row("Analysed tissue area", (f"{f.tissue_area_mm2:.3f} mm²", "")),
        Row("Triage priority", (f.priority.upper(), f"score {f.priority_score:.3f}"), emphasis=True),
    )
    tables = [Table("Findings", ("", "Count", "per mm² of tissue"), rows)]
    top = f.top_detections(10)
    if top:
        tables.append(Table(
            "Most confident detections",
            ("", "Class", "Confidence", "Box (level-0 px: x, y, width, height)"),
            tuple(Row(str(n), (d.cls, "added" if d.confidence is None else f"{d.confidence:.3f}",
                               f"{d.l0_x0:.0f}, {d.l0_y0:.0f}, {d.l0_x1 - d.l0_x0:.0f}, {d.l0_y1 - d.l0_y0:.0f}"))
                  for n, d in enumerate(top, start=1)),
            note=f"{len(f.detections)} detection(s) in all; every one is in detections.geojson and, for DICOM "
                 "slides, in the bulk annotations.",
        ))
    return headline, f.priority.lower() if f.detections else "none", tuple(tables)


def _mri_content(f: MriFindings) -> tuple[str, str, tuple[Table, ...]]:
    if not f.lesions:
        return "No lesion found.", "none", (Table("Findings", ("", ""), (Row("Lesions", ("none found",)),)),)
    probabilities = [les.malignancy_probability for les in f.lesions if les.malignancy_probability is not None]
    top = max(probabilities, default=None)
    headline = f"{len(f.lesions)} lesion(s), {f.malignant} classified malignant"
    headline += f" (highest probability of malignancy {top:.2f})." if top is not None else "."
    rows = tuple(
        Row(les.name, (f"{les.volume_ml:.2f}", f"{les.longest_diameter_mm:.1f}", _number(les.malignancy_probability),
                       les.label or "—",
                       ", ".join(f"{v:.1f}" for v in les.centroid_lps_mm) if les.centroid_lps_mm else "—"),
            emphasis=les.label == "malignant")
        for les in f.lesions
    )
    flagged = " ".join(f"{les.name}: {'; '.join(les.plausibility)}; not classified, for review."
                       for les in f.lesions if les.plausibility)
    tables = [Table("Lesions", ("", "Volume (mL)", "Longest diameter (mm)", "P(malignant)", "Label",
                                "Centroid (LPS mm)"), rows,
                    note=f"Total lesion volume {f.total_volume_ml:.2f} mL. {f.finding.capitalize()}."
                         + (f" {flagged}" if flagged else ""))]
    features = sorted({name for les in f.lesions for name in les.features})
    if features:
        shown = [les for les in f.lesions if les.features]
        tables.append(Table("Radiomics features used by the classifier", ("", *(les.name for les in shown)),
                            tuple(Row(name, tuple(f"{les.features.get(name, float('nan')):.4g}" for les in shown))
                                  for name in features)))
    return headline, "high" if f.malignant else "medium", tuple(tables)


def _inspect_content(summary: Mapping[str, Any]) -> tuple[str, str, tuple[Table, ...]]:
    rows = tuple(Row(str(k).replace("_", " "), (_plain(v),)) for k, v in summary.items() if not isinstance(v, dict))
    nested = [
        Table(str(k).replace("_", " ").capitalize(), ("", ""),
              tuple(Row(str(kk).replace("_", " "), (_plain(vv),)) for kk, vv in v.items()))
        for k, v in summary.items() if isinstance(v, dict) and v
    ]
    return "What the input is, before any model sees it.", "none", (Table("Input", ("", ""), rows), *nested)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{str(k).replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = "; ".join(_plain(v) for v in value) if any(isinstance(v, dict) for v in value) else \
            ", ".join(_plain(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = "—" if value is None else str(value)
    return text if len(text) <= 300 else text[:297] + "…"


def _timings(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    rows = [("Total", f"{float(doc.get('seconds') or 0):.1f} s")]
    summary = doc.get("summary") or {}
    stages = summary.get("stage_seconds") or {
        k.removesuffix("_s"): v for k, v in (summary.get("processing") or {}).items()
        if k.endswith("_s") and "_per_" not in k and isinstance(v, int | float)
    }
    rows += [(str(k).replace("_", " "), f"{float(v):.2f} s") for k, v in stages.items()]
    return tuple(rows)


# ------------------------------------------------------------------------------------------ output


def machine_readable(report: ReportDocument) -> dict[str, Any]:
    """The report's content as JSON-ready data, without the case header (patient identity stays in the
    documents meant for people): headline, tables, figures, models, timings, DICOM objects, warnings."""
    content = dataclasses.asdict(report)
    del content["case"]
    normal: dict[str, Any] = json.loads(json.dumps(content))  # tuples as lists, as a reader of the file sees them
    return normal



def template_environment() -> jinja2.Environment:
    """The templates of reports/templates, HTML-escaped, failing on an undefined name."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: ReportDocument) -> str:
    """The report as one HTML page (figures referenced relative to the result folder)."""
    env = template_environment()
    css = files("reports").joinpath(TEMPLATES, "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html.j2").render(report=report, css=css)


def write_pdf(html: str, base: Path, target: Path) -> Path:
    """Lay ``html`` out as PDF at ``target``; relative links (figures) resolve against ``base``."""
    import weasyprint

    weasyprint.HTML(string=html, base_url=str(base)).write_pdf(str(target))
    return target
