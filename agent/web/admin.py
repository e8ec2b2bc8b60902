"""The admin page and its API under ``/api/admin/``: failed jobs with their reason and a retry, slide results kept
for lack of patient context with a form to attach it, the review statistics per model version, the accounts
(listed, added, disabled; passwords changed and proxy-only accounts made with ``oncoagent users``).

Only admins: every route asks :meth:`WebContext.caller` who is asking (401 anonymous, 403 a wrong CSRF token)
and answers 403 to any other role. Every change an admin makes is in the web audit trail (no patient values in
it: the context's field names only).

A retried job is queued again in the store; the daemon's executor looks for runnable jobs every
``executor.poll_interval_s`` (and the CLI's ``oncoagent jobs retry`` from another process relies on the same), so
nothing needs waking. Attaching context does what ``oncoagent jobs retry`` does after a sidecar was written: the
slide's context is replaced in the store (:meth:`Store.set_context`, source ``web``) and the job whose result was
kept is queued again: it runs again and, with the context, makes its DICOM objects for PACS.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from agent.errors import StoreError, UnknownUserError, UserExistsError
from agent.passwords import hash_password
from agent.records import InputKind, JobStatus
from agent.review_records import Role, User
from agent.store.cases import CaseFilter, CaseRow, list_cases
from agent.web.api import web
from agent.web.auth import Caller
from agent.web.case_views import PATHOLOGY_PIPELINES, display_name, status_text
from agent.web.context import WebContext
from reports.context import from_mapping

router = APIRouter()
TEMPLATES = Jinja2Templates(directory=str(Path(str(resources.files("agent.web"))) / "templates"))
Text = Annotated[str, Field(max_length=256)]
Page = Annotated[int, Query(ge=1, le=100_000)]


class SlideContext(BaseModel):
    """Patient and study context for a slide, as a sidecar would give it (see :mod:`reports.context`)."""

    model_config = ConfigDict(extra="forbid")
    patient_id: Text
    accession_number: Text | None = None
    study_uid: Text | None = None
    patient_name: Text | None = None
    patient_birth_date: Text | None = None
    patient_sex: Text | None = None
    study_id: Text | None = None
    study_date: Text | None = None
    study_time: Text | None = None
    study_description: Text | None = None
    referring_physician_name: Text | None = None
    container_identifier: Text | None = None


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    role: Role
    password: str  # checked by hash_password, whose refusal does not repeat it (a validation error would)


def admin(request: Request, page: bool = False) -> tuple[WebContext, Caller]:
    """The context and the caller, who must be an admin (403 otherwise, recorded)."""
    context = web(request)
    caller = context.caller(request, page=page)
    if caller.role is not Role.ADMIN:
        context.audit(caller.user.name, caller.address, "refused", None, f"admin route {request.url.path}")
        raise HTTPException(status_code=403, detail="for admins only")
    return context, caller


def admin_api(request: Request) -> tuple[WebContext, Caller]:
    """:func:`admin` as a dependency of the API routes: it runs before their parameters and body are validated, so
    that a request without an admin's session gets its 401/403 whatever it sent."""
    return admin(request)


Admin = Annotated[tuple[WebContext, Caller], Depends(admin_api)]


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
def admin_page(request: Request) -> Response:
    context, caller = admin(request, page=True)
    response = TEMPLATES.TemplateResponse(request, "admin.html", {
        "user": caller.user, "role": caller.role.value, "csrf": caller.csrf})
    if caller.new_token is not None:  # signed in by the proxy header just now
        context.auth.set_cookie(response, caller.new_token)
    return response


def _paged(context: WebContext, page: int, **filters: Any) -> tuple[list[CaseRow], int, int]:
    size = context.settings.page_size
    rows, total = list_cases(context.store.engine, CaseFilter(**filters), offset=(page - 1) * size, limit=size)
    return rows, total, size


@router.get("/api/admin/failed")
def failed(who: Admin, page: Page = 1) -> dict[str, Any]:
    """The cases whose newest job failed (or was cancelled), newest first, with the reason."""
    context, _caller = who
    rows, total, size = _paged(context, page, status="failed")
    jobs = []
    for row in rows:
        job = context.store.get_job(row.job_id)
        jobs.append({"job_id": row.job_id, "input_id": row.input_id, "name": display_name(row),
                     "pipeline": row.pipeline, "status": job.status.value, "attempts": job.attempts,
                     "max_attempts": job.max_attempts, "reason": row.last_error, "finished_at": row.finished_at})
    return {"total": total, "page": page, "page_size": size, "jobs": jobs}


@router.post("/api/admin/jobs/{job_id}/retry")
def retry(who: Admin, job_id: int) -> dict[str, Any]:
    context, caller = who
    try:
        context.store.get_job(job_id)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    try:
        job = context.store.retry(job_id)
    except StoreError as exc:
        context.audit(caller.user.name, caller.address, "retry-refused", job_id, str(exc))
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    context.audit(caller.user.name, caller.address, "retry", job_id)
    return {"job_id": job.id, "status": job.status.value}


@router.get("/api/admin/no-context")
def no_context(who: Admin, page: Page = 1) -> dict[str, Any]:
    """Slide results kept locally for lack of patient context, with the reason and what context they have. A
    case whose job was queued again (context attached, or a retry) stays listed with its status until the job
    ends: ``waiting`` says whether it still waits for context."""
    context, _caller = who
    rows, total, size = _paged(context, page, no_context=True)
    slides = [{"job_id": r.job_id, "input_id": r.input_id, "name": display_name(r), "pipeline": r.pipeline,
               "kind": r.input_kind, "reason": r.unsent_reason, "finished_at": r.finished_at,
               "status": status_text(r), "waiting": r.job_status == JobStatus.SUCCEEDED.value,
               "context_fields": sorted((r.attrs.get("context") or {}).keys())} for r in rows]
    return {"total": total, "page": page, "page_size": size, "slides": slides}


@router.post("/api/admin/inputs/{input_id}/context")
def attach_context(who: Admin, input_id: int, body: SlideContext) -> dict[str, Any]:
    """Give a slide its context and queue its kept result's job again, so that it makes the DICOM objects."""
    context, caller = who
    store = context.store
    try:
        inp = store.get_input(input_id)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    if inp.kind is not InputKind.SLIDE:
        raise HTTPException(status_code=409, detail=f"input {input_id} is not a slide: DICOM inputs carry context")
    given = body.model_dump(exclude_none=True)
    study, problems = from_mapping(given, "web")
    if study is None or problems:
        raise HTTPException(status_code=422, detail=problems)
    waiting = [j for j in store.jobs_for_input(input_id)
               if j.status is JobStatus.SUCCEEDED and j.unsent_reason is not None]
    if not waiting:
        raise HTTPException(status_code=409, detail=f"input {input_id} has no result waiting for patient context")
    merged = {**(inp.attrs.get("context") or {}), **given}
    store.set_context(input_id, merged, "web")
    requeued = [store.retry(job.id).id for job in waiting]
    for job_id in requeued:
        context.audit(caller.user.name, caller.address, "attach-context", job_id,
                      f"input {input_id}: {', '.join(sorted(given))}; job queued again")
    return {"input_id": input_id, "context_fields": sorted(merged), "requeued": requeued,
            "detail": f"context stored; job {', '.join(map(str, requeued))} queued again: it runs again and, "
                      "with the context, makes its DICOM objects for PACS"}


@router.get("/api/admin/review-stats")
def review_stats(who: Admin, since: float | None = None) -> dict[str, Any]:
    """Per pipeline and model version: the AI's findings shown in signed-off cases and what reviewers did."""
    context, _caller = who
    return {"since": since, "models": [
        {"pipeline": s.pipeline, "kind": "slide" if s.pipeline in PATHOLOGY_PIPELINES else "series",
         "model_version": s.model_version, "cases": s.cases, "shown": s.shown, "confirmed": s.confirmed,
         "rejected": s.rejected, "reclassed": s.reclassed, "added": s.added, "kept": s.kept,
         "precision": s.precision, "added_per_case": s.added_per_case}
        for s in context.store.review_stats(since)]}


@router.get("/api/admin/users")
def users(who: Admin) -> dict[str, Any]:
    """The accounts (never their password hashes)."""
    context, _caller = who
    return {"users": [_user_json(u) for u in context.store.list_users()]}


@router.post("/api/admin/users", status_code=201)
def add_user(who: Admin, body: NewUser) -> dict[str, Any]:
    """A new local account; a password change or a proxy-only account is ``oncoagent users``' business."""
    context, caller = who
    try:
        added = context.store.add_user(body.name, body.role, hash_password(body.password), time.time())
    except UserExistsError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ValueError as exc:  # an empty or over-long password, a name with spaces around it or unprintable
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    context.audit(caller.user.name, caller.address, "user-add", None, f"{added.name} as {added.role.value}")
    return _user_json(added)


@router.post("/api/admin/users/{name}/disable")
def disable_user(who: Admin, name: str) -> dict[str, Any]:
    """Disable an account and end its sessions (an admin cannot disable their own account here)."""
    context, caller = who
    if name == caller.user.name:
        raise HTTPException(status_code=409, detail="you cannot disable your own account")
    try:
        disabled = context.store.disable_user(name, time.time())
        context.auth.forget_user(disabled.id)
    except UnknownUserError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    context.audit(caller.user.name, caller.address, "user-disable", None, disabled.name)
    return _user_json(disabled)


def _user_json(user: User) -> dict[str, Any]:
    return {"name": user.name, "role": user.role.value, "created_at": user.created_at,
            "disabled_at": user.disabled_at, "password": user.password_hash is not None}
