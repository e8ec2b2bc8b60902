"""The ``http`` section: the operations endpoint (``/metrics`` for Prometheus, ``/healthz``), read by
:mod:`agent.ops.http`. On loopback by default: expose it to a monitoring network deliberately."""

from __future__ import annotations

from pydantic import Field

from agent.config.section import Section


class HttpSettings(Section):
    enabled: bool = Field(default=True, description="serve /metrics and /healthz")
    host: str = Field(default="127.0.0.1", description="address to listen on; 0.0.0.0 for every interface")
    port: int = Field(default=9464, ge=0, le=65535)
    request_timeout_s: float = Field(default=10.0, gt=0, le=300, description="a client must send its request "
                                     "and read the answer within this")
    max_connections: int = Field(default=8, ge=1, le=256, description="requests served at once; more wait in "
                                 "the listen backlog")
    stale_after_s: float = Field(default=30.0, gt=0, description="/healthz fails when the daemon's main loop "
                                 "has not ticked for this long")
