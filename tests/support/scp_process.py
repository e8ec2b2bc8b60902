"""A StorageSCP with a real Store in a process of its own, so that a test can measure that process (its RSS)
while a peer sends to it.

    python -m tests.support.scp_process ROOT [dimse_timeout_s]

Prints ``port <n>`` once listening, then serves until its standard input closes (or SIGTERM).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from agent.store import Store
from dicom_node.scp import StorageSCP
from dicom_node.settings import ScpConfig


def main() -> int:
    root = Path(sys.argv[1])
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    store = Store.open(f"sqlite:///{root / 'scp.db'}")
    settings = ScpConfig(port=0, min_free_disk_mb=1, dimse_timeout_s=timeout, network_timeout_s=timeout)
    scp = StorageSCP(store, settings, root / "storage")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    port = scp.start()
    print(f"port {port}", flush=True)
    try:
        done.wait()
    finally:
        scp.stop()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
