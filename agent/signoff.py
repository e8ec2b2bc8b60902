"""Sign-off: a reviewer signs a case, and the confirmed result becomes the case's result.

:func:`write_signoff` is what the web worklist calls when a reviewer signs version N of a job's review. It
reads the job's result folder (``result.json``: summary, ``dicom_outputs``, ``unsent_reason``, models) and
writes ``<result folder>/reviewed/v<N>/``:

* ``sr.dcm``: the verified SR (:func:`reports.verified.verified_srs`): the corrected findings, the reviewer
  as verifying observer, the predecessor the previous signed version's SR (a reopened case) or the AI's SR;
  ``fallback/sr-comprehensive.dcm`` beside it, for a PACS that refuses Comprehensive 3D SR (the sender
  looks for fallbacks beside the object it sends);
* ``report.html``, ``report.pdf``: the report with the corrected figures and "Reviewed and signed by …";
  both it and the SR carry the "model not validated at this site" mark while the result's models have no
  acceptance record at the time of signing (:mod:`agent.site_marks`);
* ``signoff.json``: the sign-off as given and what was made of it.

The folder is built under a staging name, every file fsynced, and renamed whole: it is there complete or not
at all. The AI's result is left untouched. UIDs derive from the AI SR's UID and the version, so a second call
for the same version writes nothing and returns the same outputs (a different sign-off for a version already
written is refused: a reopened case is a new version, never an edit). The SR is queued in the outbox for
every destination that takes results (:func:`agent.job_outcomes.deliveries_for`, as a job's results are);
the daemon's sender delivers it. A result without patient context (its ``unsent_reason``) gets no SR: the
report only, and the reason returned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from agent.config import Settings
from agent.errors import OncoAgentError
from agent.job_outcomes import deliveries_for
from agent.records import Input, InputKind, Job, JobStatus
from agent.results import RESULT_FILE
from agent.site_marks import result_mark
from agent.store import Store
from pipelines.durable import fsync_dir, replace_dir
from reports import context as study_context
from reports import document
from reports.context import StudyContext
from reports.errors import ReportError
from reports.producer import Producer
from reports.render import FALLBACK_SR_FILE, REPORT_HTML, REPORT_PDF, SEG_FILE, SR_FILE
from reports.validation_mark import MARK_KEY
from reports.verified import Review, Sources, corrected_doc, reviewed_document, verified_srs

log = logging.getLogger(__name__)

REVIEWED_DIR = "reviewed"
RECORD_FILE = "signoff.json"
OVERVIEW_FILE = "overview.dcm"


class SignOffError(OncoAgentError):
    """The sign-off cannot be written: no such successful job, an unreadable result, a version already signed
    with other content, a previous version that is not there."""


@dataclass(frozen=True)
class SignOff:
    job_id: int
    version: int  # the review version (1, 2 after a reopen, ...)
    reviewer: str  # the user name, as the verifying observer's name
    reviewer_role: str  # pathologist | radiologist | admin
    signed_at: float  # epoch seconds
    note: str | None
    corrected: dict[str, Any]  # slide: counts and detections; MR: lesions with "accepted" (reports.verified)
    previous_sr_uid: str | None  # the verified SR of the previous signed version (a reopen), else None


@dataclass(frozen=True)
class SignOffOutputs:
    folder: Path  # <result folder>/reviewed/v<version>/
    sr_sop_instance_uid: str | None
    queued: int  # outbox entries made
    pdf: Path | None
    unsent_reason: str | None  # why no SR was made / sent (e.g. no patient context), like result.json's


def write_signoff(store: Store, settings: Settings, signoff: SignOff) -> SignOffOutputs:
    """Write the sign-off's folder (once per version) and queue its SR; see the module docstring."""
    if signoff.version < 1:
        raise SignOffError(f"job {signoff.job_id}: review version {signoff.version} (versions start at 1)")
    job = store.get_job(signoff.job_id)
    if job.status is not JobStatus.SUCCEEDED or job.result_path is None:
        raise SignOffError(f"job {job.id} is {job.status.value}: only a successful result can be signed off")
    result_dir = job.result_path
    folder = result_dir / REVIEWED_DIR / f"v{signoff.version}"
    given = json.loads(json.dumps(asdict(signoff)))  # as signoff.json holds it
    if not (folder / RECORD_FILE).is_file():
        _build(store, settings, job, signoff, folder, given)
    record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    if record["signoff"] != given:
        raise SignOffError(f"job {job.id}: version {signoff.version} is signed already, with other content; "
                           "a reopened case is signed as a new version")
    sr_uid, queued = record.get("sr_sop_instance_uid"), 0
    if sr_uid:
        outputs = [{"file": SR_FILE, "sop_class_uid": record["sr_sop_class_uid"], "sop_instance_uid": sr_uid}]
        for d in deliveries_for(settings.destinations, folder, outputs):
            _, now = store.outbox_add(d.destination, d.path, d.sop_class_uid, d.sop_instance_uid, job_id=job.id)
            queued += now
    log.info("job %d: review version %d signed off; SR %s, %d outbox entr%s", job.id, signoff.version,
             sr_uid or "none", queued, "y" if queued == 1 else "ies")
    pdf = folder / REPORT_PDF
    return SignOffOutputs(folder, sr_uid, queued, pdf if pdf.is_file() else None, record.get("unsent_reason"))


def _build(store: Store, settings: Settings, job: Job, signoff: SignOff, folder: Path, given: dict[str, Any]
           ) -> None:
    result_dir = folder.parent.parent
    try:
        doc = json.loads((result_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SignOffError(f"job {job.id}: result.json unreadable: {exc}") from exc
    inp = store.get_input(job.input_id)
    headers, context = _sources(store, inp)
    review = Review(signoff.reviewer, signoff.reviewer_role, settings.scp.ae_title, signoff.signed_at,
                    signoff.version, signoff.note)
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.partial"
    for stale in folder.parent.glob(f".{folder.name}.*.partial"):  # a crash's, before the rename
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fixed = {**corrected_doc(doc, signoff.corrected),
                 MARK_KEY: result_mark(settings.data_dir, doc.get("models") or ())}
        ai_sr = _ai_sr(result_dir, doc)
        unsent = doc.get("unsent_reason") or (None if ai_sr is not None else
                                               "the AI's result has no SR to supersede")
        record: dict[str, Any] = {"signoff": given, "sr_sop_instance_uid": None, "sr_sop_class_uid": None,
                                  "predecessor_sop_instance_uid": None, "unsent_reason": unsent}
        objects: list[document.DicomObject] = []
        if unsent is None and ai_sr is not None:
            predecessor = _predecessor(result_dir, signoff, ai_sr)
            sources = Sources(ai_sr, predecessor, headers, _dataset(result_dir, SEG_FILE, doc, whole=True),
                              _dataset(result_dir, OVERVIEW_FILE, doc))
            producer = Producer.of_result(doc, inp.key, inp.study_uid, inp.series_uid, job.input_fingerprint)
            sr, fallback = verified_srs(fixed, producer, sources, review)
            sr.save_as(staging / SR_FILE, enforce_file_format=True)
            (staging / FALLBACK_SR_FILE).parent.mkdir()
            fallback.save_as(staging / FALLBACK_SR_FILE, enforce_file_format=True)
            objects = [document.DicomObject(SR_FILE, "Comprehensive 3D SR", str(sr.SOPInstanceUID),
                                            "the reviewed findings (verified SR, TID 1500)")]
            record.update(sr_sop_instance_uid=str(sr.SOPInstanceUID), sr_sop_class_uid=str(sr.SOPClassUID),
                          predecessor_sop_instance_uid=str(predecessor.SOPInstanceUID))
        name = document.input_name(inp.kind.value, inp.key, headers)
        report = reviewed_document(fixed, context, name, review, objects)
        html = document.render_html(report)
        (staging / REPORT_HTML).write_text(html, encoding="utf-8")
        document.write_pdf(html, staging, staging / REPORT_PDF)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        _fsync_tree(staging)
        replace_dir(staging, folder)
    except (ReportError, ValueError, KeyError, TypeError, AttributeError, InvalidDicomError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SignOffError(f"job {job.id}: sign-off version {signoff.version} not written: "
                           f"{type(exc).__name__}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _sources(store: Store, inp: Input) -> tuple[list[Dataset], StudyContext | None]:
    """The input's DICOM headers (none for a slide file) and its patient/study context, as the AI's reports
    read them."""
    if inp.kind is InputKind.DICOM_SERIES:
        headers, _ = study_context.read_headers(store.instance_paths(inp.id))
        return headers, study_context.from_dataset(headers[0]) if headers else None
    mapping = inp.attrs.get("context")
    if isinstance(mapping, dict) and mapping:
        return [], study_context.from_mapping(mapping, inp.attrs.get("context_source"))[0]
    return [], None


def _ai_sr(result_dir: Path, doc: dict[str, Any]) -> Dataset | None:
    return _dataset(result_dir, SR_FILE, doc)


def _dataset(result_dir: Path, name: str, doc: dict[str, Any], *, whole: bool = False) -> Dataset | None:
    """An object of the AI's result that went to PACS (one of ``dicom_outputs``), or None."""
    if not any(o.get("file") == name for o in doc.get("dicom_outputs") or ()):
        return None
    try:
        return pydicom.dcmread(result_dir / name, stop_before_pixels=not whole)
    except (OSError, InvalidDicomError) as exc:
        raise SignOffError(f"the result's {name} is unreadable: {exc}") from exc


def _predecessor(result_dir: Path, signoff: SignOff, ai_sr: Dataset) -> Dataset:
    """The SR the signed one supersedes: the previous signed version's (``previous_sr_uid``), else the AI's."""
    if signoff.previous_sr_uid is None:
        return ai_sr
    for path in sorted((result_dir / REVIEWED_DIR).glob(f"v*/{SR_FILE}")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if str(header.SOPInstanceUID) == signoff.previous_sr_uid:
            return header
    raise SignOffError(f"job {signoff.job_id}: no signed version with SR {signoff.previous_sr_uid} to supersede")


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk before the folder is renamed into place."""
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))
