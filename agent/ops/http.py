"""The operations endpoint: ``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (200 with a JSON body
of the checks, 503 naming the failing ones), on one small HTTP server thread.

Bounded: at most ``http.max_connections`` requests are served at once (a thread each; further connections wait
in the listen backlog until one ends), and a client has ``http.request_timeout_s`` for every read and write.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.config import HttpSettings
from agent.ops.health import HealthChecks

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, health: HealthChecks,
                 settings: HttpSettings) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.health = health
        self.request_timeout_s = settings.request_timeout_s
        self._slots = threading.BoundedSemaphore(settings.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()  # all slots busy: the serving loop waits, new connections stay in the backlog
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing idles on a slot

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            health = self.server.health.run()
            body = json.dumps(health.as_json(), indent=1).encode()
            self._answer(200 if health.ok else 503, "application/json", body)
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)


class OpsServer:
    """``/metrics`` and ``/healthz`` on ``settings.host:settings.port`` (port 0: any free one)."""

    def __init__(self, settings: HttpSettings, registry: CollectorRegistry, health: HealthChecks) -> None:
        self.settings = settings
        self.registry = registry
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and serve on a thread; return the bound port. Raises OSError when it cannot listen."""
        server = _Server((self.settings.host, self.settings.port), self.registry, self.health, self.settings)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="ops-http", daemon=True)
        self._thread.start()
        port = int(server.server_address[1])
        log.info("metrics and health on http://%s:%d/metrics and /healthz", self.settings.host, port)
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
