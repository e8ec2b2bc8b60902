"""The ``web`` section: the triage worklist (:mod:`agent.web`), served by the daemon. On loopback by default:
put it behind the hospital's reverse proxy, or give it a certificate, before opening it to a network."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator

from agent.config.section import Section


class AuthMode(StrEnum):
    LOCAL = "local"  # accounts of `oncoagent users`, signed in with a password
    PROXY = "proxy"  # a trusted reverse proxy names the user in a header (single sign-on); local logins too


class WebSettings(Section):
    enabled: bool = Field(default=True, description="serve the worklist")
    host: str = Field(default="127.0.0.1", description="address to listen on; 0.0.0.0 for every interface")
    port: int = Field(default=8140, ge=0, le=65535)
    tls_cert: Path | None = Field(default=None, description="PEM certificate: serve HTTPS (cookies then Secure)")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    auth: AuthMode = Field(default=AuthMode.LOCAL, description="local: passwords; proxy: also a header set by a "
                           "trusted reverse proxy")
    proxy_header: str = Field(default="X-Remote-User", description="the header naming the signed-in user")
    trusted_proxies: list[str] = Field(default_factory=list, description="addresses whose proxy header is "
                                       "believed; from any other address the header is ignored")
    session_hours: float = Field(default=10.0, gt=0, le=24 * 30, description="a login lasts this long")
    login_attempts: int = Field(default=5, ge=1, le=1000, description="failed logins per address and per user "
                                "name within login_window_s before further tries are refused")
    login_window_s: float = Field(default=300.0, gt=0, le=86400)
    tile_cache_mb: int = Field(default=256, ge=0, le=65536, description="memory for Deep Zoom tiles already made")
    open_slides: int = Field(default=8, ge=1, le=256, description="slides kept open for tiles")
    page_size: int = Field(default=50, ge=1, le=500, description="worklist rows per page")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("web.tls_cert and web.tls_key go together")
        if self.auth is AuthMode.PROXY and not self.trusted_proxies:
            raise ValueError("web.auth proxy needs web.trusted_proxies (the reverse proxy's addresses)")
        return self
