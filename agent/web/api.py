"""The JSON API under ``/api/``: the worklist, a case with its detections and the reviewer's decisions, Deep Zoom
tiles and crops of its slide. The pages use it; other systems (a LIS, a dashboard) may too, with the same
sessions and roles. Its OpenAPI document is ``/api/openapi.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from agent.review_records import DecisionKind
from agent.signoff import REVIEWED_DIR
from agent.site_marks import PageMarks, result_mark
from agent.store import reviews
from agent.store.cases import CaseFilter, CaseRow, list_cases
from agent.store.review_stats import model_version_of
from agent.web.case_views import (
    LESION_CLASSES,
    SLIDE_CLASSES,
    case_counts,
    corrected_result,
    decision_json,
    detections,
    is_slide_case,
    lesions,
    may_decide,
    row_json,
    slide_counts,
    visible_pipelines,
)
from agent.web.context import MAX_ID, WebContext
from agent.web.tiles import TileError
from reports.render import REPORT_PDF


def web(request: Request) -> WebContext:
    context: WebContext = request.app.state.web
    return context


def signed_in(request: Request) -> None:
    """Every API route's first step, before its parameters are validated: 401 for an anonymous caller, 403 for
    a change without the session's CSRF token (a malformed request from nobody learns nothing of the API)."""
    web(request).caller(request)


router = APIRouter(prefix="/api", dependencies=[Depends(signed_in)])
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Label = Literal["CTC", "CTM"]


class Decide(BaseModel):
    target: str = Field(pattern=r"^(d|a|l):\d{1,9}$", description="a slide case's d:<index> (a detection) or "
                        "a:<n> (an added cell, undo only); an MR case's l:<index> (a lesion)")
    decision: Literal["confirmed", "rejected"] | None = Field(description="null: undo the decision")
    label: Literal["CTC", "CTM", "malignant", "benign"] | None = Field(
        default=None, description="the class after the decision: CTC/CTM on a slide, malignant/benign on MR")


class AddCell(BaseModel):
    box: tuple[float, float, float, float] = Field(description="level-0 pixels: x0, y0, x1, y1")
    label: Label = "CTC"


@router.get("/me")
def me(request: Request) -> dict[str, Any]:
    caller = web(request).caller(request)
    return {"name": caller.user.name, "role": caller.role.value, "csrf": caller.csrf}


@router.get("/cases")
def cases(request: Request,
          status: Literal["queued", "analysing", "failed", "new", "in_review", "signed_off"] | None = None,
          pipeline: str | None = None, priority: Annotated[int | None, Query(ge=0, le=9)] = None,
          since: float | None = None, until: float | None = None,
          reviewer: Annotated[str | None, Query(max_length=128)] = None, discordant: bool = False,
          no_context: bool = False, q: Annotated[str | None, Query(max_length=128)] = None,
          page: Annotated[int, Query(ge=1, le=100_000)] = 1,
          sort: Literal["priority", "received", "analysed"] = "priority") -> dict[str, Any]:
    context = web(request)
    caller = context.caller(request)
    pipelines = visible_pipelines(caller.role)
    if pipeline is not None:
        pipelines = (pipeline,) if pipelines is None or pipeline in pipelines else ()
    size = context.settings.page_size
    rows, total = list_cases(context.store.engine, CaseFilter(
        pipelines=pipelines, status=status, priority=priority, since=since, until=until, reviewer=reviewer,
        discordant=discordant, no_context=no_context, search=q), offset=(page - 1) * size, limit=size, sort=sort)
    marks = PageMarks(context.config.data_dir)
    return {"total": total, "page": page, "page_size": size,
            "cases": [row_json(r, marks.of(r.models)) for r in rows]}


@router.get("/cases/{job_id}")
def case(request: Request, job_id: JobId) -> dict[str, Any]:
    context = web(request)
    caller = context.caller(request)
    found = context.case(caller, job_id)
    context.audit(caller.user.name, caller.address, "view", job_id)
    review = reviews.latest_review(context.store.engine, job_id)
    decided = reviews.decisions(context.store.engine, review.id) if review is not None else []
    body: dict[str, Any] = {
        **row_json(found, result_mark(context.config.data_dir, found.models)),
        "may_decide": may_decide(caller.role, found) and found.job_status == "succeeded",
        "summary": {k: v for k, v in (found.summary or {}).items() if k != "detections"},
        "review": None if review is None else {
            "version": review.version, "status": review.status.value, "holder": review.holder_name,
            "signed_by": review.signed_by_name, "signed_at": review.signed_at, "note": review.note},
        "decisions": [decision_json(d) for d in decided],
    }
    if is_slide_case(found):
        found_detections = detections(found)
        body["detections"] = [{"index": i, "class": d["class"], "confidence": d.get("confidence"),
                               "box": d["l0_box"]} for i, d in enumerate(found_detections)]
        body["counts"] = slide_counts(found_detections, decided)
        body["modality"] = ((found.summary or {}).get("slide") or {}).get("modality")
        try:
            body["slide"] = dict(zip(("width", "height"), context.tiles.dimensions(Path(found.input_path)),
                                     strict=True))
        except TileError as exc:
            body["slide"] = {"error": str(exc)}
    else:
        body["counts"] = case_counts(found, decided)
    return body


def open_review(context: WebContext, request: Request, job_id: int) -> tuple[Any, CaseRow, Any]:
    caller = context.caller(request)
    found = context.case(caller, job_id, decide=True)
    if found.job_status != "succeeded":
        raise HTTPException(status_code=409, detail=f"case {job_id} has no result to review")
    review = reviews.start_review(context.store.engine, job_id, caller.user.id, time.time())
    if review.status.value != "in_review":
        raise HTTPException(status_code=409, detail=f"case {job_id} is signed off; reopen it first")
    return caller, found, review


def _model_version(found: CaseRow) -> str | None:
    """What the decisions are recorded with: the same text the review statistics fall back to for a case."""
    return model_version_of(found.models) or None


@router.post("/cases/{job_id}/decisions")
def decide(request: Request, job_id: JobId, body: Decide) -> dict[str, Any]:
    context = web(request)
    caller, found, review = open_review(context, request, job_id)
    _check_decision(found, body)
    engine = context.store.engine
    if body.decision is None:
        reviews.remove_decision(engine, review.id, body.target)
    else:
        reviews.decide(engine, review.id, body.target, DecisionKind(body.decision), body.label, None,
                       _model_version(found), caller.user.id, time.time())
    context.audit(caller.user.name, caller.address, "decide", job_id,
                  f"{body.target} {body.decision or 'undone'}" + (f" as {body.label}" if body.label else ""))
    decided = reviews.decisions(engine, review.id)
    return {"decisions": [decision_json(d) for d in decided], "counts": case_counts(found, decided)}


def _check_decision(found: CaseRow, body: Decide) -> None:
    """422 unless the target and label belong to this kind of case (and the target exists in it)."""
    kind, number = body.target[0], int(body.target[2:])
    if is_slide_case(found):
        exists = (kind == "d" and number < len(detections(found))) or (kind == "a" and body.decision is None)
        targets, labels = "d:<detection> or, to undo, a:<added cell>", SLIDE_CLASSES
    else:
        exists = kind == "l" and any(lesion.get("index") == number for lesion in lesions(found))
        targets, labels = "l:<lesion index>", LESION_CLASSES
    if not exists:
        raise HTTPException(status_code=422, detail=f"no {body.target} in case {found.job_id} (targets: {targets})")
    if body.label is not None and body.label not in labels:
        raise HTTPException(status_code=422, detail=f"label {body.label}: this case's classes are {', '.join(labels)}")


@router.post("/cases/{job_id}/added")
def add_cell(request: Request, job_id: JobId, body: AddCell) -> dict[str, Any]:
    context = web(request)
    caller, found, review = open_review(context, request, job_id)
    x0, y0, x1, y1 = body.box
    if not (x1 > x0 and y1 > y0):
        raise HTTPException(status_code=422, detail="the box must have x1 > x0 and y1 > y0")
    engine = context.store.engine
    target = reviews.next_added_target(engine, review.id)
    reviews.decide(engine, review.id, target, DecisionKind.ADDED, body.label, list(body.box),
                   _model_version(found), caller.user.id, time.time())
    context.audit(caller.user.name, caller.address, "add", job_id, f"{target} {body.label}")
    decided = reviews.decisions(engine, review.id)
    return {"target": target, "decisions": [decision_json(d) for d in decided],
            "counts": case_counts(found, decided)}


@router.get("/cases/{job_id}/report.pdf")
def report(request: Request, job_id: JobId) -> FileResponse:
    """The case's PDF report: the reviewed one of its newest signed version, or else the AI's."""
    context = web(request)
    caller = context.caller(request)
    found = context.case(caller, job_id)
    review = reviews.latest_review(context.store.engine, job_id)
    name = "report.pdf"
    for version in range(review.version if review is not None else 0, 0, -1):
        reviewed = f"{REVIEWED_DIR}/v{version}/{REPORT_PDF}"
        if found.result_path and (Path(found.result_path) / reviewed).is_file():
            name = reviewed
            break
    context.audit(caller.user.name, caller.address, "report", job_id, name)
    return FileResponse(context.result_file(found, name), media_type="application/pdf")


@router.get("/cases/{job_id}/thumbnail")
def thumbnail(request: Request, job_id: JobId) -> FileResponse:
    context = web(request)
    found = context.case(context.caller(request), job_id)
    return FileResponse(context.result_file(found, "preview.png"), media_type="image/png")


def _slide_path(context: WebContext, request: Request, job_id: int) -> Path:
    return context.slide_of(context.caller(request), job_id)


@router.get("/cases/{job_id}/slide.dzi")
def dzi(request: Request, job_id: JobId) -> Response:
    context = web(request)
    try:
        return Response(context.tiles.dzi(_slide_path(context, request, job_id)), media_type="application/xml")
    except TileError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.get("/cases/{job_id}/slide_files/{level}/{col}_{row}.jpeg")
def tile(request: Request, job_id: JobId, level: int, col: int, row: int) -> Response:
    context = web(request)
    try:
        data = context.tiles.tile(_slide_path(context, request, job_id), level, col, row)
    except TileError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/cases/{job_id}/crops/{index}.jpeg")
def crop(request: Request, job_id: JobId, index: int,
         channel: Annotated[int | None, Query(ge=0, le=2, description="one channel, in grey")] = None) -> Response:
    context = web(request)
    path = _slide_path(context, request, job_id)
    found = detections(context.case(context.caller(request), job_id))
    if not 0 <= index < len(found):
        raise HTTPException(status_code=404, detail=f"no detection {index}")
    box = found[index]["l0_box"]
    try:
        data = context.tiles.crop(path, (box[0], box[1], box[2], box[3]), channel=channel)
    except TileError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})



class SignOffBody(BaseModel):
    note: str | None = Field(default=None, max_length=4000)


@router.post("/cases/{job_id}/sign-off")
def sign_off(request: Request, job_id: JobId, body: SignOffBody) -> dict[str, Any]:
    """Make the reviewed result final: the review is signed (one of two concurrent sign-offs fails with 409),
    then the verified SR and the reviewed report are written and the SR queued for PACS."""
    context = web(request)
    caller, found, review = open_review(context, request, job_id)
    engine = context.store.engine
    replaced = reviews.review_version(engine, job_id, review.version - 1) if review.version > 1 else None
    previous = replaced.sr_sop_instance_uid if replaced is not None else None
    corrected = corrected_result(found, reviews.decisions(engine, review.id))
    note = body.note if body.note is not None else review.note  # a note saved while in review stays
    signed = reviews.sign_off(engine, review.id, caller.user.id, corrected, note, time.time())
    context.audit(caller.user.name, caller.address, "sign-off", job_id, f"version {signed.version}")
    outputs = context.write_signoff(found, signed, caller, corrected, previous)
    return {"version": signed.version, "status": signed.status.value, "signed_by": caller.user.name,
            "signed_at": signed.signed_at, **outputs}


@router.post("/cases/{job_id}/reopen")
def reopen(request: Request, job_id: JobId) -> dict[str, Any]:
    context = web(request)
    caller = context.caller(request)
    context.case(caller, job_id, decide=True)
    review = reviews.reopen_review(context.store.engine, job_id, caller.user.id, time.time())
    context.audit(caller.user.name, caller.address, "reopen", job_id, f"version {review.version}")
    return {"version": review.version, "status": review.status.value}
