"""The worklist over TLS (``web.tls_cert``/``tls_key``): HTTPS only, and the session cookie marked Secure, HttpOnly
and SameSite=Strict."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.store import Store, users
from agent.web.server import WebServer


def test_the_worklist_speaks_https_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    users.add_user(store.engine, "path1", "pathologist", hash_password("tls-pw-1"), time.time())
    server = WebServer(Settings(data_dir=tmp_path, web=WebSettings(port=0, tls_cert=cert, tls_key=key)), store)
    server.start()
    try:
        assert server.url.startswith("https://")
        base = f"https://127.0.0.1:{server.port}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/login", timeout=10)  # plain HTTP is not served
        client = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(cert)), timeout=30)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        answer = client.post("/login", data={"name": "path1", "password": "tls-pw-1", "csrf": token.group(1)})
        assert answer.status_code == 303
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith("oa_session="))
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict"} <= flags
        assert client.get("/api/me").json()["name"] == "path1"
    finally:
        server.stop()
        store.close()
