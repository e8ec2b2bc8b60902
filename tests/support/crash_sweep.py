"""Peers and probes of the crash sweep (tests/e2e/test_crash_sweep.py): dcmtk senders that record which instances
were acknowledged, an Orthanc that counts every C-STORE it receives, the phases a failpoint trace shows in
progress, and SIGKILL of the daemon with its workers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import psutil

from tests.support.daemon import DaemonProcess
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for

PHASES = ("receiving", "processing", "reports", "sending")

# the failpoints (agent/failpoints.py) that open or close a phase, on the process that reaches them
PHASE_AFTER: dict[str, str | None] = {
    "results.before-pipeline": "processing",
    "results.before-reports": "reports",
    "worker.after-result": "reports",  # the result folder is in place, its success not yet committed
    "worker.after-outcome": None,
    "outbox.round-start": "sending",
    "outbox.round-end": None,
}

COUNT_DELIVERIES = """
function ReceivedInstanceFilter(dicom, origin, info)
  local f = io.open("{log}", "a")
  f:write(dicom.SOPInstanceUID .. "\\n")
  f:close()
  return true
end
"""


class CountingOrthanc(Orthanc):
    """Orthanc that logs every C-STORE it receives (a Lua ``ReceivedInstanceFilter``, run before the instance is
    stored and before the answer) and overwrites an instance it holds: a second delivery of an object is counted,
    where Orthanc's index alone would show one copy whatever it received."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deliveries_log = root / "deliveries.log"
        script = root / "count-deliveries.lua"
        script.write_text(COUNT_DELIVERIES.format(log=self.deliveries_log))
        config = json.loads(self.config.read_text())
        config.update({"LuaScripts": [str(script)], "OverwriteInstances": True})
        self.config.write_text(json.dumps(config))

    def deliveries(self) -> Counter[str]:
        """How many times each SOP Instance UID was received so far."""
        if not self.deliveries_log.exists():
            return Counter()
        return Counter(line for line in self.deliveries_log.read_text().splitlines() if line)


class Sender:
    """One ``storescu -v`` run; ``acked`` lists the SOP Instance UIDs the daemon answered with success."""

    def __init__(self, daemon: DaemonProcess, files: list[Path], uid_of: dict[str, str]) -> None:
        self.uid_of = uid_of
        self.acked: list[str] = []
        self.started = threading.Event()  # the first dataset is on its way
        self.proc = subprocess.Popen(
            ["storescu", "-v", "-aet", "MODALITY", "-aec", daemon.scp_aet, "127.0.0.1", str(daemon.scp_port),
             *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        current: str | None = None
        for line in self.proc.stdout:
            if m := re.search(r"Sending file: (\S+)", line):
                current = m.group(1)
                self.started.set()
            elif "Received Store Response (Success)" in line and current:
                self.acked.append(self.uid_of[current])
                current = None

    def in_flight(self) -> bool:
        return self.started.is_set() and self.proc.poll() is None

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self.thread.join(timeout)
        return code


def phases_in_trace(trace: str) -> set[str]:
    """The phases a failpoint trace (``<time> <pid> <name>`` lines) leaves in progress at its end."""
    last: dict[tuple[str, str], str | None] = {}
    for line in trace.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in PHASE_AFTER:
            _, pid, name = parts
            track = "outbox" if name.startswith("outbox.") else "worker"  # the daemon's sender thread, or a worker
            last[(pid, track)] = PHASE_AFTER[name]
    return {phase for phase in last.values() if phase}


def stopped_process(daemon: DaemonProcess) -> int | None:
    """The pid of the daemon or one of its workers frozen by a failpoint (SIGSTOP), if any."""
    assert daemon.proc is not None
    try:
        parent = psutil.Process(daemon.proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    for proc in family:
        try:
            if proc.status() == psutil.STATUS_STOPPED:
                return int(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return None


def kill_daemon(daemon: DaemonProcess, *, group: bool) -> None:
    """SIGKILL the daemon and, with ``group``, each of its processes; either way wait until every worker is gone:
    a worker must die with its daemon (PR_SET_PDEATHSIG), never finish a job the next daemon runs again."""
    assert daemon.proc is not None
    parent = psutil.Process(daemon.proc.pid)
    family = parent.children(recursive=True)
    for proc in [parent, *family] if group else [parent]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue
    assert daemon.wait(30) == -signal.SIGKILL

    def alive(proc: psutil.Process) -> bool:
        try:
            return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    wait_for(lambda: not any(map(alive, family)), 30, interval=0.05, what="the daemon's workers to die with it")
