"""What every route of the web app needs: the settings, the store, who is asking, the audit trail, the tiles.

Routes get it from ``request.app.state.web``. :meth:`WebContext.caller` is the one gate: a route that serves
data asks it first and gets a 401 (or, for a page, a redirect to the login) when nobody is signed in, and a 403
when the CSRF token of a state-changing request is missing or wrong.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request

from agent.config import WebSettings
from agent.review_records import WebAuditEvent
from agent.store import Store, web_audit
from agent.store.cases import CaseRow, get_case
from agent.web.auth import Authenticator, Caller, client_address
from agent.web.case_views import may_decide, may_see
from agent.web.tiles import TileServer
from agent.web.volumes import VolumeCache

log = logging.getLogger(__name__)


class LoginRequired(Exception):
    """A page asked for without a session: answered with a redirect to the login page."""


@dataclass
class WebContext:
    settings: WebSettings
    store: Store
    auth: Authenticator
    tiles: TileServer
    volumes: VolumeCache = field(default_factory=VolumeCache)  # MR cases' loaded series

    @classmethod
    def build(cls, settings: WebSettings, store: Store) -> WebContext:
        return cls(settings, store, Authenticator(settings, store),
                   TileServer(settings.open_slides, settings.tile_cache_mb * 1024 * 1024))

    def caller(self, request: Request, page: bool = False) -> Caller:
        caller = self.auth.caller(request)
        if caller is None:
            if page:
                raise LoginRequired()
            raise HTTPException(status_code=401, detail="sign in first")
        self.auth.check_csrf(request, caller)
        return caller

    def case(self, caller: Caller, job_id: int, decide: bool = False) -> CaseRow:
        """The case, if the caller may see it (and decide on it); 404 when it does not exist, 403 otherwise."""
        found = get_case(self.store.engine, job_id)
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

    def result_file(self, case: CaseRow, name: str) -> Path:
        if not case.result_path:
            raise HTTPException(status_code=404, detail="the case has no result yet")
        path = Path(case.result_path) / name
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"the result has no {name}")
        return path
