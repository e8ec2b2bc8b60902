"""Who is asking: sessions, the trusted proxy header, CSRF and the login rate limit.

A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS); the store keeps only its
SHA-256 with the user, an expiry and the session's CSRF token. A session the store confirmed is believed for
``SESSION_MEMORY_S`` without asking again (a viewer asks for tiles many times a second), so a logout elsewhere or a
disabled account takes effect within seconds. Every request that changes state must carry the CSRF token (the
``X-CSRF-Token`` header from the pages' JavaScript, or a ``csrf`` form field), so another site cannot act with a
reviewer's cookie. In ``proxy`` mode a reverse proxy at one of ``web.trusted_proxies`` names the user in
``web.proxy_header``; the header from any other address is ignored, and the named user must exist and be
enabled. Failed logins are counted per address and per user name; past ``web.login_attempts`` within
``web.login_window_s`` further tries are refused without checking the password.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from fastapi import HTTPException, Request, Response

from agent.config import AuthMode, WebSettings
from agent.review_records import Role, User
from agent.store import Store, web_sessions
from agent.store import users as store_users

COOKIE = "oa_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TRACKED_KEYS = 10_000  # addresses and names whose failures are remembered (oldest forgotten first)
SESSION_MEMORY_S = 5.0  # a session found in the store is believed this long without asking again (tiles come fast)
REMEMBERED_SESSIONS = 1024


@dataclass(frozen=True)
class Caller:
    user: User
    csrf: str
    address: str
    new_token: str | None = None  # a session made for this request (proxy mode): set its cookie

    @property
    def role(self) -> Role:
        return self.user.role


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class LoginLimiter:
    """Failed logins per key (an address, a user name) in a sliding window; bounded in the keys it tracks."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, *keys: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            return any(len(self._recent(key, now)) >= self.attempts for key in keys)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > TRACKED_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque(maxlen=self.attempts))
        while times and times[0] < now - self.window_s:
            times.popleft()
        return times


class Authenticator:
    def __init__(self, settings: WebSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.limiter = LoginLimiter(settings.login_attempts, settings.login_window_s)
        self.secure = settings.tls_cert is not None
        self._remembered: OrderedDict[str, tuple[float, User, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _session(self, token: str, now: float) -> tuple[User, str] | None:
        """The session's user and CSRF token: from memory for a few seconds after the store last said so."""
        with self._lock:
            remembered = self._remembered.get(token)
        if remembered is not None and remembered[0] > now:
            return remembered[1], remembered[2]
        found = web_sessions.session_user(self.store.engine, token, now)
        with self._lock:
            if found is None:
                self._remembered.pop(token, None)
            else:
                self._remembered[token] = (now + SESSION_MEMORY_S, *found)
                self._remembered.move_to_end(token)
                while len(self._remembered) > REMEMBERED_SESSIONS:
                    self._remembered.popitem(last=False)
        return found

    def forget_user(self, user_id: int) -> None:
        """Ask the store again about every session of the user (disabled, or given a new password)."""
        with self._lock:
            for token in [t for t, (_until, user, _csrf) in self._remembered.items() if user.id == user_id]:
                del self._remembered[token]

    def end(self, token: str) -> None:
        with self._lock:
            self._remembered.pop(token, None)
        web_sessions.end_session(self.store.engine, token)

    def caller(self, request: Request) -> Caller | None:
        """The signed-in caller of the request, or None."""
        address = client_address(request)
        token = request.cookies.get(COOKIE)
        now = time.time()
        if token:
            found = self._session(token, now)
            if found is not None:
                user, csrf = found
                if self._proxy_user_name(request) in (None, user.name):
                    return Caller(user, csrf, address)
        name = self._proxy_user_name(request)
        if name is None:
            return None
        named = store_users.user_by_name(self.store.engine, name)
        if named is None or named.disabled_at is not None:
            return None
        new_token, csrf = web_sessions.create_session(self.store.engine, named.id, address, self.lifetime_s, now)
        return Caller(named, csrf, address, new_token=new_token)

    @property
    def lifetime_s(self) -> float:
        return self.settings.session_hours * 3600.0

    def _proxy_user_name(self, request: Request) -> str | None:
        if self.settings.auth is not AuthMode.PROXY:
            return None
        if client_address(request) not in self.settings.trusted_proxies:
            return None
        name = request.headers.get(self.settings.proxy_header, "").strip()
        return name or None

    def check_csrf(self, request: Request, caller: Caller, form_token: str | None = None) -> None:
        if request.method in SAFE_METHODS:
            return
        sent = request.headers.get(CSRF_HEADER) or form_token or ""
        if not hmac.compare_digest(sent.encode(), caller.csrf.encode()):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(COOKIE, token, max_age=int(self.lifetime_s), httponly=True, samesite="strict",
                            secure=self.secure, path="/")

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure)
