"""The JSON API of an MR case under ``/api/``: its volume (slices, spacing, default window, the planes it can be
shown in, the lesions and the slices each spans), slices of the acquired plane or of a reformat as PNG after
window/level with the lesions' outlines, and the reviewer's note (on any case in review). Lesion decisions go
through ``POST /api/cases/{id}/decisions`` (:mod:`agent.web.api`) with ``l:<lesion index>`` targets."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from agent.store import reviews
from agent.store.cases import CaseRow
from agent.web.api import open_review, signed_in, web
from agent.web.case_views import is_slide_case, lesions
from agent.web.context import WebContext
from agent.web.volumes import LoadedVolume, VolumeError, colour, load_volume, planes, render_slice

router = APIRouter(prefix="/api", dependencies=[Depends(signed_in)])
log = logging.getLogger(__name__)
LABEL_MAP = "lesions.nii.gz"
WINDOW_LIMIT = 1e7  # |centre| and width beyond any MR value


class Note(BaseModel):
    note: str = Field(max_length=reviews.NOTE_LIMIT, description="the reviewer's note; empty: none")


def _series_paths(context: WebContext, found: CaseRow) -> list[Path]:
    """The series' files: its received instances, or the files of the folder it was read from."""
    paths = context.store.instance_paths(found.input_id)
    if paths:
        return paths
    folder = Path(found.input_path)
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [folder] if folder.is_file() else []


def _volume(context: WebContext, found: CaseRow) -> LoadedVolume:
    if is_slide_case(found):
        raise HTTPException(status_code=404, detail=f"case {found.job_id} is a slide, not an MR series")
    if found.job_status != "succeeded" or not found.result_path:
        raise HTTPException(status_code=404, detail=f"case {found.job_id} has no result yet")
    paths = _series_paths(context, found)
    if not paths:
        raise HTTPException(status_code=404, detail=f"case {found.job_id}: the series' files are gone")
    label_map = Path(found.result_path) / str((found.summary or {}).get("label_map_file") or LABEL_MAP)
    try:
        return context.volumes.get((found.job_id, found.result_path), lambda: load_volume(paths, label_map))
    except VolumeError as exc:
        log.warning("job %s: the case's volume cannot be shown: %s", found.job_id, exc)
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.get("/cases/{job_id}/volume")
def volume(request: Request, job_id: int) -> dict[str, Any]:
    context = web(request)
    caller = context.caller(request)
    found = context.case(caller, job_id)
    loaded = _volume(context, found)
    slices, rows, columns = loaded.shape
    extents = {e.index: e for e in loaded.lesions}
    listed = []
    for lesion in lesions(found):
        extent = extents.get(int(lesion.get("index") or 0))
        listed.append({
            "index": lesion.get("index"), "colour": colour(int(lesion.get("index") or 1)),
            "slices": None if extent is None else [extent.first_slice, extent.last_slice],
            "ranges": None if extent is None else [list(r) for r in extent.ranges],
            "centre_voxel": None if extent is None else list(extent.centre),
        })
    return {
        "slices": slices, "rows": rows, "columns": columns, "planes": planes(loaded),
        "spacing_mm": [round(v, 4) for v in loaded.spacing_mm],
        "window": {"center": round(loaded.window[0], 3), "width": round(loaded.window[1], 3),
                   "source": loaded.window_source},
        "range": [float(loaded.pixels.min()), float(loaded.pixels.max())],
        "outlines": loaded.labels is not None, "outline_error": loaded.label_error,
        "lesions": listed,
    }


@router.get("/cases/{job_id}/slices/{k}.png")
def slice_png(request: Request, job_id: int, k: int,
              center: Annotated[float | None, Query(ge=-WINDOW_LIMIT, le=WINDOW_LIMIT)] = None,
              width: Annotated[float | None, Query(gt=0, le=WINDOW_LIMIT)] = None,
              outlines: bool = True,
              axis: Annotated[int, Query(ge=0, le=2, description="0: the acquired plane; 1, 2: reformats")] = 0,
              ) -> Response:
    context = web(request)
    caller = context.caller(request)
    found = context.case(caller, job_id)
    loaded = _volume(context, found)
    if not 0 <= k < loaded.shape[axis]:
        raise HTTPException(status_code=404, detail=f"no slice {k}: the series has {loaded.shape[axis]} across axis "
                                                    f"{axis}")
    window_centre = loaded.window[0] if center is None or not math.isfinite(center) else center
    window_width = loaded.window[1] if width is None or not math.isfinite(width) else width
    data = render_slice(loaded, k, window_centre, window_width, outlines, axis)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


@router.post("/cases/{job_id}/note")
def note(request: Request, job_id: int, body: Note) -> dict[str, Any]:
    context = web(request)
    caller, _found, review = open_review(context, request, job_id)
    text = body.note.strip() or None
    saved = reviews.set_note(context.store.engine, review.id, text, time.time())
    context.audit(caller.user.name, caller.address, "note", job_id, f"{len(text or '')} characters")
    return {"note": saved.note, "version": saved.version}
