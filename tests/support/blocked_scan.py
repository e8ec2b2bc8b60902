"""A daemon whose folder scans hang like a share that stopped answering, for the watchdog test.

``python -m tests.support.blocked_scan CONFIG GATE``: ``oncoagent run`` with CONFIG, its folder watcher handed in
through :class:`agent.daemon.Daemon`'s constructor. Each scan writes ``GATE.blocked-N`` and then opens the FIFO
GATE for reading, which blocks (in the kernel, like a read on a hung NFS mount) until the test opens it for
writing; then it writes ``GATE.done-N`` and scans for real.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import Settings, load_settings
from agent.daemon import Daemon
from agent.ingest import FolderWatcher
from agent.runtime import prepare_process
from agent.store import Store


class BlockedScans(FolderWatcher):
    def __init__(self, store: Store, settings: Settings, gate: Path) -> None:
        super().__init__(store, settings)
        self.gate = gate
        self.scans = 0

    def scan(self, now: float | None = None) -> int:
        self.scans += 1
        Path(f"{self.gate}.blocked-{self.scans}").touch()
        with self.gate.open("rb") as fifo:  # blocks until a writer opens it
            fifo.read()
        Path(f"{self.gate}.done-{self.scans}").touch()
        return super().scan(now)


def main(config: str, gate: str) -> int:
    settings = load_settings(Path(config)).settings
    prepare_process(settings.log.level, settings.log.format, settings.plugins)
    return Daemon(settings, watcher_factory=lambda store, s: BlockedScans(store, s, Path(gate))).run()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
