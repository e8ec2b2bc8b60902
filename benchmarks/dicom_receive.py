"""Receive throughput of OncoAgent's SCP against dcmtk's storescp and pynetdicom's storescp app.

Not a test: prints instances/s, MB/s and ratios measured in one run on this machine. 1000 small generated MR
instances are sent by dcmtk's storescu over loopback to (a) the OncoAgent daemon (durable: fsync + rename +
database record before each success), (b) dcmtk's storescp writing to disk, (c) pynetdicom's storescp app
writing to disk; then the same with 4 concurrent senders of 250 instances each. Every receiver's stored count
is checked against the sent count. Last, the cost of one durably written file on this disk without DICOM or
database (write, fsync, rename, folder fsync): the floor under any receiver that answers only once an
instance is on disk (dcmtk's and pynetdicom's storescp answer before).

    .venv/bin/python benchmarks/dicom_receive.py [--instances 1000] [--senders 4]

Goal (issue 3): OncoAgent ≥ 0.5× dcmtk and ≥ 1.0× pynetdicom's app.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


# Debian's dcmtk leaves Nagle's algorithm on unless TCP_NODELAY is set; then every DIMSE message waits ~40 ms
# for a delayed ACK. The sender and dcmtk's storescp run with it off (their fastest setting); pynetdicom's app
# runs as shipped; OncoAgent's SCP disables Nagle on its own sockets.
NO_NAGLE = {**os.environ, "TCP_NODELAY": "1"}


class Receiver:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "receiver.log").open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                     env={**NO_NAGLE, "PYTHONPATH": str(REPO)})
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def stored(self) -> int:
        return sum(1 for p in (self.root / "out").rglob("*") if p.is_file())


class OncoAgent(Receiver):
    def command(self) -> list[str]:
        config = {
            "scp": {"port": self.port, "min_free_disk_mb": 1, "max_associations": 16},
            "routing": {"rules": []},
            "ingest": {"inbox": False, "quiet_seconds": 3600},
            "executor": {"workers": 1},
            "log": {"level": "WARNING"},
        }
        (self.root / "oncoagent.yaml").write_text(yaml.safe_dump(config))
        return [sys.executable, "-m", "agent.cli", "--config", str(self.root / "oncoagent.yaml"),
                "--data-dir", str(self.root / "data"), "run"]

    def stored(self) -> int:
        from agent.store import Store

        store = Store.open(f"sqlite:///{self.root / 'data' / 'oncoagent.db'}", migrate=False)
        try:
            recorded = int(store.counts()["instances"])
        finally:
            store.close()
        on_disk = sum(1 for _ in (self.root / "data" / "storage").rglob("*.dcm"))
        return min(recorded, on_disk)


class DcmtkStorescp(Receiver):
    def command(self) -> list[str]:
        (self.root / "out").mkdir(parents=True, exist_ok=True)
        return ["storescp", "-aet", "ONCOAGENT", "-od", str(self.root / "out"), str(self.port)]


class PynetdicomStorescp(Receiver):
    def command(self) -> list[str]:
        (self.root / "out").mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "pynetdicom", "storescp", "-aet", "ONCOAGENT", "-od",
                str(self.root / "out"), str(self.port)]


def send(port: int, files: list[Path], senders: int) -> float:
    chunks = [files[i::senders] for i in range(senders)]
    failures: list[str] = []

    def one(chunk: list[Path]) -> None:
        proc = subprocess.run(
            ["storescu", "-aet", "BENCH", "-aec", "ONCOAGENT", "127.0.0.1", str(port), *map(str, chunk)],
            capture_output=True, text=True, check=False, env=NO_NAGLE,
        )
        if proc.returncode != 0:
            failures.append(proc.stderr[-500:])

    threads = [threading.Thread(target=one, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError("storescu failed: " + " | ".join(failures))
    return elapsed


def measure(make: Callable[[Path], Receiver], root: Path, files: list[Path], senders: int) -> dict[str, float]:
    receiver = make(root)
    receiver.start()
    try:
        elapsed = send(receiver.port, files, senders)
        time.sleep(0.5)
        stored = receiver.stored()
    finally:
        receiver.stop()
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    return {"seconds": elapsed, "per_s": len(files) / elapsed, "mb_s": size_mb / elapsed, "stored": stored}


def durable_write_floor_ms(folder: Path, size: int, count: int = 300) -> float:
    """Milliseconds one durably stored file costs on this disk with no DICOM at all: the SCP's own
    :func:`pipelines.durable.write_bytes_durably` (temporary file, fsync, rename, folder fsync)."""
    from pipelines.durable import write_bytes_durably

    data = os.urandom(size)
    t0 = time.perf_counter()
    for i in range(count):
        write_bytes_durably(folder / f"{i}.dcm", data)
    return (time.perf_counter() - t0) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} (dcmtk) is needed: apt-get install dcmtk", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="oncoagent-bench-") as tmp:
        root = Path(tmp)
        series = write_mr_series(root / "series", MRSeriesSpec(slices=args.instances, rows=64, columns=64, seed=1))
        files = series.files
        size_kb = sum(p.stat().st_size for p in files) / len(files) / 1024
        print(f"{len(files)} MR instances of {size_kb:.1f} KB, sent by dcmtk storescu over loopback")
        receivers: list[tuple[str, Callable[[Path], Receiver]]] = [
            ("oncoagent", lambda r: OncoAgent("oncoagent", r)),
            ("dcmtk storescp", lambda r: DcmtkStorescp("dcmtk", r)),
            ("pynetdicom storescp", lambda r: PynetdicomStorescp("pynetdicom", r)),
        ]
        ok = True
        for senders in (1, args.senders):
            print(f"\n{senders} sender(s):")
            results = {}
            for index, (name, make) in enumerate(receivers):
                results[name] = measure(make, root / f"run-{senders}-{index}", files, senders)
                r = results[name]
                complete = r["stored"] == len(files)
                ok &= complete
                stored = f"{int(r['stored'])}/{len(files)}{'' if complete else ' INCOMPLETE'}"
                print(f"  {name:<20} {r['per_s']:8.1f} instances/s {r['mb_s']:7.2f} MB/s "
                      f"({r['seconds']:.2f} s, stored {stored})")
            ours = results["oncoagent"]["per_s"]
            dcmtk, pynetdicom = results["dcmtk storescp"]["per_s"], results["pynetdicom storescp"]["per_s"]
            print(f"  ratio vs dcmtk storescp:      {ours / dcmtk:.2f}x (goal >= 0.5)")
            print(f"  ratio vs pynetdicom storescp: {ours / pynetdicom:.2f}x (goal >= 1.0)")
            print(f"  0.5x dcmtk leaves {2000 * senders / dcmtk:.2f} ms per instance on each of {senders} sender(s)")
        floor = durable_write_floor_ms(root / "floor", int(size_kb * 1024))
        print(f"\ndurable write on this disk (write, fsync, rename, folder fsync; no DICOM, no database): "
              f"{floor:.2f} ms per file, at most {1000 / floor:.0f} files/s for one sender")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
