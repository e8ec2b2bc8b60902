"""What every route of the web app needs: the settings, the store, who is asking, the audit trail, the tiles.

Routes get it from ``request.app.state.web``. :meth:`WebContext.caller` is the one gate: a route that serves
data asks it first and gets a 401 (or, for a page, a redirect to the login) when nobody is signed in, and a 403
when the CSRF token of a state-changing request is missing or wrong.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from agent.config import Settings, WebSettings
from agent.review_records import Review, WebAuditEvent
from agent.signoff import SignOff, write_signoff
from agent.store import Store, reviews, web_audit
from agent.store.cases import CaseRow, get_case
from agent.web.auth import Authenticator, Caller, client_address
from agent.web.case_views import is_slide_case, may_decide, may_see, visible_pipelines
from agent.web.tiles import TileServer
from agent.web.volumes import VolumeCache

log = logging.getLogger(__name__)
REMEMBERED_SLIDES = 4096
MAX_ID = 2**62  # ids past this are no row of any database (and would overflow SQLite's integers)


class LoginRequired(Exception):
    """A page asked for without a session: answered with a redirect to the login page."""


@dataclass
class WebContext:
    settings: WebSettings
    store: Store
    auth: Authenticator
    tiles: TileServer
    config: Settings  # the daemon's settings: destinations and reports for a sign-off's outputs
    outbox_queued: Callable[[], None] = lambda: None  # the daemon wakes its outbox sender with this
    volumes: VolumeCache = field(default_factory=VolumeCache)  # MR cases' loaded series
    _slides: OrderedDict[int, tuple[str, Path]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, config: Settings, store: Store) -> WebContext:
        settings = config.web
        return cls(settings, store, Authenticator(settings, store),
                   TileServer(settings.open_slides, settings.tile_cache_mb * 1024 * 1024), config)

    def caller(self, request: Request, page: bool = False) -> Caller:
        known: Caller | None = getattr(request.state, "caller", None)
        if known is not None:
            return known
        caller = self.auth.caller(request)
        if caller is None:
            if page:
                raise LoginRequired()
            raise HTTPException(status_code=401, detail="sign in first")
        self.auth.check_csrf(request, caller)
        request.state.caller = caller
        return caller

    def slide_of(self, caller: Caller, job_id: int) -> Path:
        """The slide of a slide case the caller may see, remembered per job (tiles ask for it many times a second;
        a job's input never changes)."""
        with self._lock:
            known = self._slides.get(job_id)
        if known is None:
            found = self.case(caller, job_id)
            if not is_slide_case(found):
                raise HTTPException(status_code=404, detail=f"case {job_id} has no slide")
            known = (found.pipeline, Path(found.input_path))
            with self._lock:
                self._slides[job_id] = known
                while len(self._slides) > REMEMBERED_SLIDES:
                    self._slides.popitem(last=False)
        pipelines = visible_pipelines(caller.role)
        if pipelines is not None and known[0] not in pipelines:
            raise HTTPException(status_code=403, detail=f"case {job_id} is not for a {caller.role.value}")
        return known[1]

    def case(self, caller: Caller, job_id: int, decide: bool = False) -> CaseRow:
        """The case, if the caller may see it (and decide on it); 404 when it does not exist, 403 otherwise."""
        found = get_case(self.store.engine, job_id) if 0 < job_id <= MAX_ID else None
        if found is None:
            raise HTTPException(status_code=404, detail=f"no case {job_id}")
        allowed = may_decide(caller.role, found) if decide else may_see(caller.role, found)
        if not allowed:
            self.audit(caller.user.name, caller.address, "refused", job_id, "not for this role")
            raise HTTPException(status_code=403, detail=f"case {job_id} is not for a {caller.role.value}")
        return found

    def audit(self, user_name: str | None, address: str, action: str, job_id: int | None = None,
              detail: str | None = None) -> None:
        event = WebAuditEvent(at=time.time(), user_name=user_name, address=address, action=action, job_id=job_id,
                              detail=detail)
        try:
            web_audit.record(self.store.engine, [event])
        except Exception:  # the audit trail failing must not take the page down; it is logged instead
            log.exception("web audit record failed (%s, job %s)", action, job_id)

    def audit_request(self, request: Request, caller: Caller | None, action: str, job_id: int | None = None,
                      detail: str | None = None) -> None:
        self.audit(caller.user.name if caller else None, client_address(request), action, job_id, detail)

    def write_signoff(self, case: CaseRow, signed: Review, caller: Caller, corrected: dict[str, Any],
                      previous_sr_uid: str | None) -> dict[str, Any]:
        """The signed review's outputs (verified SR queued for PACS, reviewed report), as the answer shows them.
        The review is already signed: outputs that cannot be written are reported, not a reason to unsign."""
        assert signed.signed_at is not None
        signoff = SignOff(job_id=case.job_id, version=signed.version, reviewer=caller.user.name,
                          reviewer_role=caller.role.value, signed_at=signed.signed_at, note=signed.note,
                          corrected=corrected, previous_sr_uid=previous_sr_uid)
        try:
            outputs = write_signoff(self.store, self.config, signoff)
        except Exception as exc:
            log.exception("job %d: the sign-off's outputs could not be written", case.job_id)
            return {"sr_sop_instance_uid": None, "queued": 0, "report": None,
                    "outputs_error": f"{exc.__class__.__name__}: {exc}"}
        if outputs.sr_sop_instance_uid is not None:
            reviews.set_sr_uid(self.store.engine, signed.id, outputs.sr_sop_instance_uid)
        if outputs.queued:
            self.outbox_queued()
        return {"sr_sop_instance_uid": outputs.sr_sop_instance_uid, "queued": outputs.queued,
                "report": str(outputs.pdf) if outputs.pdf else None, "unsent_reason": outputs.unsent_reason}

    def result_file(self, case: CaseRow, name: str) -> Path:
        if not case.result_path:
            raise HTTPException(status_code=404, detail="the case has no result yet")
        path = Path(case.result_path) / name
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"the result has no {name}")
        return path
