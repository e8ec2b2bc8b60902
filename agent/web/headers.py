"""The headers every answer of the web app carries, added by a plain ASGI middleware (Starlette's
``BaseHTTPMiddleware`` costs a task and a stream per request: tiles come by the hundred).

* the security headers (no sniffing, no framing, same-origin referrers, a Content-Security-Policy without inline
  scripts or eval);
* ``Cache-Control: no-store`` on API answers that set no caching of their own;
* the session cookie of a caller signed in by the trusted proxy header whose session began with this request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'",
}


class AnswerHeaders:
    def __init__(self, app: ASGIApp, set_cookie: Callable[[Response, str], None]) -> None:
        self.app = app
        self.set_cookie = set_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})  # what the routes' request.state holds
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if api and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                caller = state.get("caller")
                if caller is not None and caller.new_token is not None and "set-cookie" not in headers:
                    carrier = Response()
                    self.set_cookie(carrier, caller.new_token)  # a proxy's user: its session from now on
                    headers.append("set-cookie", carrier.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, send_with_headers)
