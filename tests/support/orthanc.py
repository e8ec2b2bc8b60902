"""Orthanc (Debian's package) as a real PACS on loopback, with a temporary configuration.

Debian's Orthanc 1.10 listens on all interfaces, so it is only started inside a private network namespace
(the suite runs in one via tests/run-isolated.sh); elsewhere the tests that need it skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port, network_isolated
from tests.support.waiting import wait_for


class Orthanc:
    def __init__(self, root: Path, modalities: dict[str, tuple[str, str, int]] | None = None) -> None:
        if shutil.which("Orthanc") is None:
            pytest.skip("Orthanc is not installed (make test installs Debian's orthanc package)")
        if not network_isolated():
            pytest.skip("Orthanc listens on all interfaces: run through tests/run-isolated.sh (make test)")
        self.root = root
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.ae_title = "ORTHANC"
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "OncoAgentTestPACS",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "Plugins": [],
            "StableAge": 1,
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Orthanc:
        log = (self.root / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(["Orthanc", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._up, 60, what="Orthanc to answer its REST API")
        return self

    def _up(self) -> bool:
        try:
            self.get("/system")
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def discard(self) -> None:
        """End a test's Orthanc for good: SIGKILL. Its graceful stop (:meth:`stop`) takes about three seconds,
        spent on a folder nobody reads again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def upload(self, path: Path) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/instances", data=path.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.loads(response.read())["ID"])

    def sop_instance_uids(self) -> list[str]:
        uids = []
        for instance_id in self.get("/instances"):
            uids.append(self.get(f"/instances/{instance_id}/simplified-tags")["SOPInstanceUID"])
        return uids

    def verified_srs(self) -> list[dict[str, Any]]:
        """The tags (simplified) of every stored instance whose VerificationFlag is VERIFIED: signed-off SRs."""
        found = []
        for instance in self.get("/instances"):
            tags = self.get(f"/instances/{instance}/tags?simplify")
            if tags.get("VerificationFlag") == "VERIFIED":
                found.append(tags)
        return found
