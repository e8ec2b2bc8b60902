"""The web application: the login, the worklist and the case pages (Jinja2 templates, a little JavaScript), the
JSON API (:mod:`agent.web.api`) and the static files, among them the viewer library ``make web-assets`` installs
from npm."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from agent.config import Settings
from agent.errors import ReviewStateError
from agent.passwords import verify_password
from agent.site_marks import result_mark
from agent.store import Store, web_sessions
from agent.store import users as store_users
from agent.web.admin import router as admin_router
from agent.web.api import router
from agent.web.auth import COOKIE, client_address
from agent.web.case_views import is_slide_case
from agent.web.context import LoginRequired, WebContext
from agent.web.headers import AnswerHeaders
from agent.web.series_api import router as series_router

LOGIN_CSRF_COOKIE = "oa_login"
HERE = Path(str(resources.files("agent.web")))
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))


def create_app(config: Settings, store: Store) -> FastAPI:
    settings = config.web
    app = FastAPI(title="OncoAgent worklist", openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.web = WebContext.build(config, store)
    app.include_router(router)
    app.include_router(series_router)
    app.include_router(admin_router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    app.add_middleware(AnswerHeaders, set_cookie=app.state.web.auth.set_cookie)

    @app.exception_handler(ReviewStateError)
    async def conflict(_request: Request, exc: ReviewStateError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        response = TEMPLATES.TemplateResponse(request, "login.html", {
            "next": _local(next), "error": error, "csrf": token})
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=settings.tls_cert is not None, path="/login")
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, name: str = Form(max_length=128), password: str = Form(max_length=1024),
              csrf: str = Form(max_length=64), next: str = Form("/", max_length=512)) -> Response:
        context: WebContext = app.state.web
        address = client_address(request)
        if not secrets.compare_digest(csrf.encode(), request.cookies.get(LOGIN_CSRF_COOKIE, "").encode()):
            return Response("missing or wrong CSRF token", status_code=403)
        keys = (f"address:{address}", f"name:{name}")
        if context.auth.limiter.blocked(*keys):
            context.audit(None, address, "login-refused", None, "too many failed logins")
            return _login_again(next, "too many failed logins: wait a few minutes", 429)
        user = store_users.user_by_name(store.engine, name)
        if user is None or user.disabled_at is not None or user.password_hash is None \
                or not verify_password(user.password_hash, password):
            context.auth.limiter.failed(*keys)
            context.audit(None, address, "login-failed", None, "wrong name or password")
            return _login_again(next, "wrong name or password", 303)
        context.auth.limiter.succeeded(*keys)
        now = time.time()
        web_sessions.purge_sessions(store.engine, now)  # expired ones go as new ones come: the table stays bounded
        token, _csrf = web_sessions.create_session(store.engine, user.id, address, context.auth.lifetime_s, now)
        context.audit(user.name, address, "login")
        response = RedirectResponse(_local(next), status_code=303)
        context.auth.set_cookie(response, token)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: str = Form("", max_length=64)) -> Response:
        context: WebContext = app.state.web
        caller = context.auth.caller(request)
        if caller is not None:
            context.auth.check_csrf(request, caller, csrf)
            context.auth.end(request.cookies.get(COOKIE, ""))
            context.audit(caller.user.name, caller.address, "logout")
        response = RedirectResponse("/login", status_code=303)
        context.auth.clear_cookie(response)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def worklist(request: Request) -> Response:
        context: WebContext = app.state.web
        caller = context.caller(request, page=True)
        return _page(request, caller, "worklist.html", {})

    @app.get("/cases/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def case_page(request: Request, job_id: int) -> Response:
        context: WebContext = app.state.web
        caller = context.caller(request, page=True)
        found = context.case(caller, job_id)
        template = "slide_case.html" if is_slide_case(found) else "series_case.html"
        mark = result_mark(context.config.data_dir, found.models)
        return _page(request, caller, template, {"job_id": job_id, "validation_mark": mark})

    return app


def _page(request: Request, caller: Any, template: str, extra: dict[str, Any]) -> Response:
    return TEMPLATES.TemplateResponse(request, template, {
        "user": caller.user, "role": caller.role.value, "csrf": caller.csrf, **extra})


def _local(target: str) -> str:
    """Only a path on this site is a place to go back to after the login (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _login_again(next_path: str, error: str, status: int) -> Response:
    query = urlencode({"next": _local(next_path), "error": error})
    if status == 303:
        return RedirectResponse(f"/login?{query}", status_code=303)
    return Response(error, status_code=status)
