"""Receive throughput of OncoAgent's SCP against Orthanc, dcmtk's storescp and pynetdicom's storescp app.

Not a test: prints instances/s and ratios measured in one run on this machine. Generated instances of two
sizes — small MR (64×64, ~10 KB) and CT-like (512×512 16-bit, ~500 KB) — are sent by dcmtk's ``storescu``
over loopback, first by 1 sender, then by 4 concurrent senders (each its own association), to:

- OncoAgent's daemon (durable: each file fsynced under its final name, its folder fsynced and its database
  record committed before success is answered);
- Orthanc (Debian's package: an archive as users deploy it, own storage folder, SQLite index, no storage
  compression). It syncs less than OncoAgent: ``strace -f -c`` counted 116 ``fdatasync`` for 100 instances
  (one per stored file), no folder fsync, and its index runs ``PRAGMA SYNCHRONOUS=NORMAL`` in WAL mode (no
  sync per commit). OncoAgent syncs three times per instance (file, folder, database commit), the last two
  shared among concurrent associations;
- dcmtk's ``storescp`` and pynetdicom's ``storescp`` app writing to disk (neither fsyncs: they answer
  before anything reaches the disk).

Nagle's algorithm is off for every peer: the senders, dcmtk's storescp and Orthanc (dcmtk inside) get
``TCP_NODELAY=1`` (Debian's dcmtk leaves Nagle on otherwise: ~21 instances/s), pynetdicom's app is started
with TCP_NODELAY set on its accepted sockets, OncoAgent sets it itself. Every receiver's stored count is
checked against the sent count (the run fails otherwise), and kept until the script ends (no receiver
starts right after thousands of deletions); what a receiver wrote is synced to disk before the next one
starts (no receiver's fsyncs wait behind another's unwritten files). Each receiver is timed from the
senders' start to their end, once its whole process tree is idle after its own start; its CPU time per
instance (all its processes and threads, user + system) is printed too: on a shared machine it swings far
less than the rates. Last, in every run, the durable-write floor: what one durably written file of each size
costs on this disk without DICOM or database (write, fsync, link or rename into place, folder fsync);
OncoAgent's receive time per instance with one sender minus that floor is its per-instance overhead (Python
work, the database commit with its own fsync, the network round trip), printed
beside Orthanc's.

Orthanc listens on all interfaces, so the script runs itself in a private network namespace that has only
loopback (``unshare --net``, as tests/run-isolated.sh does) when it is not in one already; where namespaces
are not allowed it stops rather than expose Orthanc.

    .venv/bin/python benchmarks/dicom_receive.py [--mr 1000] [--ct 200] [--senders 4] [--repeat 1]
                                                 [--receivers oncoagent,orthanc,dcmtk,pynetdicom]

A default run takes about 2–3 minutes. With ``--repeat N`` the whole comparison runs N times and each cell
shows the spread (lowest–highest).

Goals (issue 13): OncoAgent ≥ 1.0× Orthanc in every cell; ≥ 0.5× dcmtk's storescp with 4 senders;
per-instance overhead (1 sender, small MR) at most ~1.15 ms, half of the ~2.3 ms measured before.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.synthetic.mri_series import MRSeriesSpec, synthetic_uid, write_mr_series  # noqa: E402

ISOLATED_ENV = "DICOM_RECEIVE_BENCH_ISOLATED"  # not ONCOAGENT_*: the daemon reads those as settings


def network_isolated() -> bool:
    return {name for _, name in socket.if_nameindex()} == {"lo"}


def isolate() -> None:
    """Re-run this script in a private network namespace with only loopback up (does not return), or exit."""
    flags = ["--net"] if os.getuid() == 0 else ["--net", "--map-root-user"]
    if os.environ.get(ISOLATED_ENV) or subprocess.run(["unshare", *flags, "true"], capture_output=True,
                                                       check=False).returncode != 0:
        print("no private network namespace here (unshare --net is refused): Orthanc listens on all interfaces,"
              " so this benchmark does not run", file=sys.stderr)
        sys.exit(2)
    os.environ[ISOLATED_ENV] = "1"
    os.execvp("unshare", ["unshare", *flags, "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                          sys.executable, *sys.argv])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


NO_NAGLE = {**os.environ, "TCP_NODELAY": "1"}

# pynetdicom's app as shipped, its accepted sockets with Nagle off (a benchmark harness, not product code)
PYNETDICOM_NO_NAGLE = """
import runpy, socket, sys
from pynetdicom import transport
accept = transport.AssociationServer.get_request
def get_request(self):
    sock, address = accept(self)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, address
transport.AssociationServer.get_request = get_request
sys.argv = ["pynetdicom", *sys.argv[1:]]
runpy.run_module("pynetdicom", run_name="__main__")
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a receiver's whole process tree (OncoAgent's worker processes included)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def settle(pid: int, timeout: float = 30) -> None:
    """Wait until a receiver that just started is idle (its process tree under 5% of a CPU for half a second):
    what it does once at start (imports, migrations, first scans, OncoAgent's worker processes importing their
    pipelines) is neither counted as receiving nor competing with it for the CPUs."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.025:
            return
        before = now


class Receiver:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "receiver.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                         env={**NO_NAGLE, "PYTHONPATH": str(REPO)})
        wait_port(self.port, self.proc, log)
        settle(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

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


class Orthanc(Receiver):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.http_port = free_port()

    def command(self) -> list[str]:
        config = {
            "Name": "OncoAgentBenchmark", "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"), "StorageCompression": False,
            "HttpPort": self.http_port, "DicomPort": self.port, "DicomAet": "ONCOAGENT",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "DicomModalities": {}, "Plugins": [],
        }
        (self.root / "orthanc.json").write_text(json.dumps(config))
        return ["Orthanc", str(self.root / "orthanc.json")]

    def stored(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/statistics", timeout=30) as response:
            return int(json.loads(response.read())["CountInstances"])


class DcmtkStorescp(Receiver):
    def command(self) -> list[str]:
        (self.root / "out").mkdir(parents=True, exist_ok=True)
        return ["storescp", "-aet", "ONCOAGENT", "-od", str(self.root / "out"), str(self.port)]


class PynetdicomStorescp(Receiver):
    def command(self) -> list[str]:
        (self.root / "out").mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-c", PYNETDICOM_NO_NAGLE, "storescp", "-aet", "ONCOAGENT", "-od",
                str(self.root / "out"), str(self.port)]


RECEIVERS: dict[str, Callable[[Path], Receiver]] = {
    "oncoagent": OncoAgent, "orthanc": Orthanc, "dcmtk": DcmtkStorescp, "pynetdicom": PynetdicomStorescp,
}


# ------------------------------------------------------------------------------------------- instances


def mr_files(folder: Path, count: int) -> list[Path]:
    """Small MR instances (64×64, 16-bit: ~10 KB each), one series."""
    return write_mr_series(folder, MRSeriesSpec(slices=count, rows=64, columns=64, seed=1)).files


def ct_files(folder: Path, count: int) -> list[Path]:
    """CT-like instances (512×512, 16-bit, uncompressed: ~512 KB each), one series."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    pixels = (rng.normal(1000, 200, (512, 512)).clip(0, 4095)).astype(np.uint16).tobytes()
    study, series = synthetic_uid("bench-ct", "study"), synthetic_uid("bench-ct", "series")
    files = []
    for i in range(count):
        sop = synthetic_uid("bench-ct", "sop", i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, UID(sop)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = synthetic_uid("bench-ct", "frame")
        ds.PatientName, ds.PatientID = "SYNTHETIC^CT", "SYN-CT-0001"
        ds.StudyDate, ds.StudyTime, ds.Modality = "20260101", "120000", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels
        path = folder / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


# ------------------------------------------------------------------------------------------- measuring


def send(port: int, files: list[Path], senders: int) -> float:
    chunks = [files[i::senders] for i in range(senders)]
    failures: list[str] = []

    def one(chunk: list[Path]) -> None:
        proc = subprocess.run(
            ["storescu", "-aet", "BENCH", "-aec", "ONCOAGENT", "127.0.0.1", str(port), *map(str, chunk)],
            capture_output=True, text=True, check=False, env=NO_NAGLE,
        )
        if proc.returncode != 0:
            failures.append(f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}")

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


def measure(make: Callable[[Path], Receiver], root: Path, files: list[Path], senders: int,
            ) -> tuple[float, float, int]:
    """(instances/s, CPU milliseconds the receiver spent per instance, instances stored) of one receiver."""
    receiver = make(root)
    receiver.start()
    assert receiver.proc is not None
    try:
        cpu = cpu_seconds(receiver.proc.pid)
        elapsed = send(receiver.port, files, senders)
        cpu = cpu_seconds(receiver.proc.pid) - cpu
        stored = receiver.stored()  # every receiver answered each instance: whatever it keeps is there now
    finally:
        receiver.stop()
    # what it wrote reaches the disk before the next receiver starts: a receiver that answers before its files
    # are on disk (dcmtk's storescp, pynetdicom's app) leaves up to hundreds of MB for the kernel to write back
    # during the next receiver's run, whose own fsyncs would then wait behind them
    os.sync()
    # what it stored stays until the end of the script: deleting thousands of files right before the next
    # receiver starts makes its own file creation slower for a minute or so on some filesystems (ext4 without a
    # journal scans past recently deleted inodes when it allocates one), which would favour whoever runs first
    return len(files) / elapsed, cpu * 1000 / len(files), stored


def durable_write_floor_ms(folder: Path, size: int, count: int = 200) -> float:
    """Milliseconds one durably stored file costs on this disk with no DICOM at all: the SCP's own
    :func:`pipelines.durable.write_bytes_durably` (new file, fsync, link or rename into place, folder fsync)."""
    from pipelines.durable import write_bytes_durably

    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    t0 = time.perf_counter()
    for i in range(count):
        write_bytes_durably(folder / f"{i}.dcm", data)
    return (time.perf_counter() - t0) / count * 1000


def spread(values: list[float], digits: int = 1) -> str:
    """One value, or the median and the range of several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mr", type=int, default=1000, help="small MR instances per cell (0: none)")
    parser.add_argument("--ct", type=int, default=200, help="CT-like instances per cell (0: none)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent senders of the second row")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole comparison this many times")
    parser.add_argument("--receivers", default=",".join(RECEIVERS), help="comma-separated, of: "
                        + ", ".join(RECEIVERS))
    args = parser.parse_args()
    names = [n.strip() for n in args.receivers.split(",") if n.strip()]
    if unknown := set(names) - set(RECEIVERS):
        parser.error(f"unknown receivers: {', '.join(sorted(unknown))}")
    for tool in ("storescu", "storescp", "Orthanc", "unshare"):
        if shutil.which(tool) is None:
            print(f"{tool} is needed (apt-get install dcmtk orthanc util-linux)", file=sys.stderr)
            return 2
    if not network_isolated():
        isolate()
    with tempfile.TemporaryDirectory(prefix="oncoagent-bench-") as tmp:
        root = Path(tmp)
        sets = {}
        if args.mr:
            sets["MR"] = mr_files(root / "mr", args.mr)
        if args.ct:
            sets["CT"] = ct_files(root / "ct", args.ct)
        sizes = {kind: sum(p.stat().st_size for p in files) / len(files) for kind, files in sets.items()}
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; sender: dcmtk storescu, loopback, "
              f"Nagle off everywhere")
        for kind, files in sets.items():
            print(f"  {kind}: {len(files)} instances of {sizes[kind] / 1024:.0f} KB")
        cells = [(kind, senders) for kind in sets for senders in (1, args.senders)]
        rates: dict[tuple[str, int, str], list[float]] = {}
        ok = True
        floors: dict[str, list[float]] = {kind: [] for kind in sets}
        cpu: dict[tuple[str, int, str], list[float]] = {}
        for run in range(args.repeat):
            for kind, senders in cells:
                for name in names:
                    per_s, cpu_ms, stored = measure(RECEIVERS[name], root / f"run-{run}-{kind}-{senders}-{name}",
                                                    sets[kind], senders)
                    rates.setdefault((kind, senders, name), []).append(per_s)
                    cpu.setdefault((kind, senders, name), []).append(cpu_ms)
                    if stored != len(sets[kind]):
                        ok = False
                        print(f"  INCOMPLETE: {name} stored {stored} of {len(sets[kind])} {kind} instances "
                              f"({senders} sender(s))")
            for kind in sets:  # in every run: the disk is shared, its speed drifts
                floors[kind].append(durable_write_floor_ms(root / f"floor-{run}-{kind}", int(sizes[kind])))
        runs = f"median (lowest–highest) of {args.repeat} runs" if args.repeat > 1 else "one run"
        print(f"\ninstances/s ({runs}; every receiver stored every instance: {'yes' if ok else 'NO'})")
        names_header = f"  {'cell':<14}" + "".join(f"{n:>22}" for n in names)
        header = names_header
        ratio_names = [n for n in ("orthanc", "dcmtk") if n in names and "oncoagent" in names]
        header += "".join(f"{'oncoagent/' + n:>20}" for n in ratio_names)
        print(header)
        for kind, senders in cells:
            line = f"  {kind + ' ' + str(senders) + ' sender' + ('s' if senders > 1 else ''):<14}"
            line += "".join(f"{spread(rates[kind, senders, n]):>22}" for n in names)
            for other in ratio_names:
                ratios = [a / b for a, b in zip(rates[kind, senders, "oncoagent"], rates[kind, senders, other],
                                                strict=True)]
                line += f"{spread(ratios, 2):>20}"
            print(line)
        print("  goals: oncoagent/orthanc >= 1.0 in every cell; oncoagent/dcmtk >= 0.5 with "
              f"{args.senders} senders")
        print("\nreceiver CPU time per instance (ms, all its threads; less disturbed by a busy machine than the "
              "rates)")
        print(names_header)
        for kind, senders in cells:
            line = f"  {kind + ' ' + str(senders) + ' sender' + ('s' if senders > 1 else ''):<14}"
            print(line + "".join(f"{spread(cpu[kind, senders, n], 2):>22}" for n in names))
        print("\nper instance, 1 sender (ms): receive time, durable-write floor (write, fsync, link or rename, folder "
              "fsync; no DICOM, no database), and the difference (overhead)")
        for kind in sets:
            for name in ("oncoagent", "orthanc"):
                if name in names:
                    ms = [1000 / r for r in rates[kind, 1, name]]
                    over = [m - f for m, f in zip(ms, floors[kind], strict=True)]
                    goal = "   (goal <= 1.15 ms)" if name == "oncoagent" and kind == "MR" else ""
                    print(f"  {kind} {name:<10} {spread(ms, 2):>20} - floor {spread(floors[kind], 2):>20} = "
                          f"overhead {spread(over, 2)}{goal}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
