"""The worklist served by the daemon: uvicorn on a thread of its own, on a socket bound before the thread starts
(so a port in use is an error at start-up, and ``port: 0`` gives a free one whose number is known)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn

from agent.config import Settings
from agent.errors import OncoAgentError
from agent.store import Store
from agent.web.app import create_app

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0


class WebServer:
    def __init__(self, config: Settings, store: Store) -> None:
        self.settings = config.web
        self.app = create_app(config, store)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the web server is not started")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_cert is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.port}/"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Nagle off (accepted sockets inherit it): a JSON answer goes out as headers then body, and without it the
        # body waits for the client's delayed ACK of the headers, 40 ms per request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OncoAgentError(f"cannot listen for the web worklist on {self.settings.host}:"
                                 f"{self.settings.port}: {exc.strerror or exc}") from exc
        self._socket = sock
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30,
            ssl_certfile=str(self.settings.tls_cert) if self.settings.tls_cert else None,
            ssl_keyfile=str(self.settings.tls_key) if self.settings.tls_key else None,
            limit_concurrency=256, timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        log.info("web worklist on %s", self.url)

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except Exception:
            log.exception("the web worklist stopped on an error")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()
        self.app.state.web.tiles.close()
        self.app.state.web.volumes.clear()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
