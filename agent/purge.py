"""Retention: deleting what was delivered long enough ago, so that the disk never fills — ``oncoagent purge``
and the daemon's purge thread (every ``retention.interval_s``).

What may go is the store's decision (:mod:`agent.store.retention`: nothing undelivered, nothing with a queued,
running or failed job, no results kept for lack of patient context); when is the ``retention`` section's:

* ``instances_days``: an input's files go that many days after its results were delivered — a series' received
  instances under ``storage/``, a slide moved from the inbox into ``storage/slides/`` (with its sidecar, or its
  folder for a multi-file slide). A slide read in place from a scanner folder is never deleted: it is not ours.
* ``results_days``: a job's result folder under ``results/`` goes that many days after its delivery.
* ``high_water_percent``: while the data directory's disk is fuller than this, the oldest eligible inputs and
  results go first, never any younger than the days above (a kind without days may go as soon as delivered).

Each input or result folder is recorded as purged in the store (eligibility checked again in that transaction)
before its files are deleted: a crash in between leaves files nobody references, never a record of files that
are gone. Only paths inside ``storage/`` and ``results/`` are ever deleted. A series with an association still
delivering instances to it is skipped (its instances may be arriving again).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Set
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.config import DataPaths, LoadedSettings, RetentionSettings, Settings
from agent.errors import OncoAgentError, StoreError
from agent.records import InputKind

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a purge runs, not when the CLI builds its parser
    from agent.store import InputPurge, ResultPurge, Store

log = logging.getLogger(__name__)

DAY_S = 86400.0

DiskUsage = Callable[[Path], tuple[int, int]]
"""(total, used) bytes of the disk holding a folder."""


def disk_usage(folder: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(folder)
    return usage.total, usage.used


@dataclass(frozen=True)
class PurgeItem:
    """One input's files or one job's result folder, to delete (or deleted)."""

    what: Literal["input", "results"]
    ident: int  # the input's id, or the job's
    label: str
    done_at: float  # when its results were delivered
    paths: tuple[Path, ...]
    size: int  # bytes on disk
    reason: str
    older_than: float  # the cutoff it was chosen under (checked again when it is recorded)
    input_kind: InputKind | None = None


@dataclass(frozen=True)
class PurgeReport:
    dry_run: bool
    items: tuple[PurgeItem, ...]
    skipped: int = 0  # no longer eligible when it came to it (received or queued again meanwhile)
    errors: int = 0  # files that could not be deleted (recorded purged; left on disk)

    @property
    def size(self) -> int:
        return sum(i.size for i in self.items)


# ------------------------------------------------------------------------------------------- planning


class _Planner:
    def __init__(self, store: Store, retention: RetentionSettings, paths: DataPaths, busy: Set[str]) -> None:
        self.store = store
        self.retention = retention
        self.paths = paths
        self.busy = busy

    def input_item(self, c: InputPurge, reason: str, older_than: float) -> PurgeItem | None:
        if c.series_uid is not None and c.series_uid in self.busy:
            return None
        files = _input_paths(c.kind, c.files, self.paths)
        if files is None:
            return None
        label = f"series {c.series_uid}" if c.kind is InputKind.DICOM_SERIES else f"slide {c.path.name}"
        return PurgeItem("input", c.input_id, f"{label} ({len(c.files)} file(s))", c.done_at, files,
                         0, reason, older_than, c.kind)

    def result_item(self, c: ResultPurge, reason: str, older_than: float) -> PurgeItem | None:
        if not _inside(c.result_path, self.paths.results):
            return None
        return PurgeItem("results", c.job_id, f"results of job {c.job_id}", c.done_at, (c.result_path,),
                         0, reason, older_than)

    def candidates(self, older_than: float, reason: str, *, inputs: bool, results: bool) -> list[PurgeItem]:
        """Eligible items delivered at or before ``older_than``, oldest first, their sizes not yet measured."""
        items: list[PurgeItem | None] = []
        if inputs:
            items += [self.input_item(c, reason, older_than) for c in self.store.purgeable_inputs(older_than)]
        if results:
            items += [self.result_item(c, reason, older_than) for c in self.store.purgeable_results(older_than)]
        return sorted((i for i in items if i is not None), key=lambda i: i.done_at)


def plan(store: Store, retention: RetentionSettings, paths: DataPaths, now: float,
         usage: DiskUsage = disk_usage, busy: Set[str] = frozenset()) -> list[PurgeItem]:
    """What retention deletes now: everything past its days, then the oldest until under the high-water mark."""
    planner = _Planner(store, retention, paths, busy)
    days = {"input": retention.instances_days, "results": retention.results_days}
    cutoff = {what: None if d is None else now - d * DAY_S for what, d in days.items()}
    chosen: list[PurgeItem] = []
    for what, key in (("input", "instances_days"), ("results", "results_days")):
        if (at := cutoff[what]) is not None:
            chosen += [_sized(i) for i in planner.candidates(at, f"older than retention.{key}",
                                                            inputs=what == "input", results=what == "results")]
    if retention.high_water_percent is None:
        return chosen
    total, used = usage(paths.storage)  # the disk received instances and results fill (a shared one, if set)
    mark = total * retention.high_water_percent / 100
    used -= sum(i.size for i in chosen)
    taken = {(i.what, i.ident) for i in chosen}
    reason = f"disk over retention.high_water_percent ({retention.high_water_percent:g}%)"
    pressure = [
        *planner.candidates(cutoff["input"] or now, reason, inputs=True, results=False),
        *planner.candidates(cutoff["results"] or now, reason, inputs=False, results=True),
    ]
    for item in sorted(pressure, key=lambda i: i.done_at):
        if used <= mark:
            break
        if (item.what, item.ident) not in taken:
            chosen.append(sized := _sized(item))
            used -= sized.size
    return chosen


def _sized(item: PurgeItem) -> PurgeItem:
    return replace(item, size=_size(item.paths))


def _input_paths(kind: InputKind, files: tuple[Path, ...], paths: DataPaths) -> tuple[Path, ...] | None:
    """What to delete for an input, or None when any of it lies outside the data directory's storage."""
    if kind is InputKind.DICOM_SERIES:
        return files if all(_inside(f, paths.storage) for f in files) else None
    slides = paths.storage / "slides"
    out: list[Path] = []
    for slide in files:
        if _inside(slide, slides) and slide.parent.resolve() == slides.resolve():
            out += [slide, slide.with_name(slide.name + ".json")]  # a single file and the sidecar moved with it
        elif _inside(slide, slides) and slide.parent.parent.resolve() == slides.resolve():
            out.append(slide.parent)  # a multi-file slide's own folder
        else:
            return None  # a slide read in place (scanner folder): not ours to delete
    return tuple(out)


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return False


def _size(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                total += sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() or f.is_symlink())
            elif path.exists() or path.is_symlink():
                total += path.lstat().st_size
        except OSError:
            continue
    return total


# ------------------------------------------------------------------------------------------- purging


def purge(store: Store, retention: RetentionSettings, paths: DataPaths, *, dry_run: bool = False,
          now: float | None = None, usage: DiskUsage = disk_usage, busy: Callable[[], Set[str]] = frozenset,
          stop: threading.Event | None = None) -> PurgeReport:
    """Delete (or with ``dry_run`` only list) what retention allows now; see the module's docstring."""
    items = plan(store, retention, paths, time.time() if now is None else now, usage, busy())
    if dry_run:
        return PurgeReport(True, tuple(items))
    done: list[PurgeItem] = []
    skipped = errors = 0
    for item in items:
        if stop is not None and stop.is_set():
            break
        detail = f"{item.label}, {item.size} bytes: {item.reason}"
        if item.what == "input":
            recorded = store.purge_input(item.ident, item.older_than, detail)
            assert item.input_kind is not None
            targets = None if recorded is None else _input_paths(item.input_kind, recorded, paths)
            if recorded is not None and targets is None:
                targets = ()
                log.warning("input %d: its files left the data directory's storage; recorded purged, none deleted",
                            item.ident)
        else:
            folder = store.purge_results(item.ident, item.older_than, detail)
            targets = None if folder is None else (folder,)
        if targets is None:
            skipped += 1
            continue
        errors += _delete(targets, paths)
        done.append(item)
        log.info("purged %s %d: %s", item.what, item.ident, detail)
    return PurgeReport(False, tuple(done), skipped, errors)


def _delete(targets: Iterable[Path], paths: DataPaths) -> int:
    """Delete files and folders inside storage/ or results/, then the folders they leave empty; return failures."""
    failures = 0
    parents: set[Path] = set()
    for target in targets:
        root = next((r for r in (paths.storage, paths.results) if _inside(target, r)), None)
        if root is None:
            log.error("not deleting %s: outside the data directory's storage and results", target)
            failures += 1
            continue
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete %s: %s", target, exc)
            failures += 1
            continue
        parents.add(target.parent)
    for deepest in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        folder = deepest
        while folder.resolve() not in (paths.storage.resolve(), paths.storage.resolve() / "slides",
                                       paths.results.resolve()) and (
                                       _inside(folder, paths.storage) or _inside(folder, paths.results)):
            try:
                folder.rmdir()  # only when empty: a series receiving again keeps its folder
            except OSError:
                break
            folder = folder.parent
    return failures


# ------------------------------------------------------------------------------------------- in the daemon


class PeriodicPurge:
    """The daemon's purge, on a thread of its own: at start, then every ``retention.interval_s``; only when
    retention is configured. ``busy``: the series an association is delivering now (skipped)."""

    def __init__(self, store: Store, settings: Settings, stop: threading.Event,
                 busy: Callable[[], Set[str]] = frozenset) -> None:
        self.store = store
        self.retention = settings.retention
        self.paths = settings.paths
        self.stop = stop
        self.busy = busy
        self.thread = threading.Thread(target=self._run, name="purge", daemon=True)

    def start(self) -> None:
        if self.retention.enabled:
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                report = purge(self.store, self.retention, self.paths, busy=self.busy, stop=self.stop)
                if report.items:
                    log.info("retention purged %d item(s), %s freed", len(report.items), _human(report.size))
            except Exception:
                log.exception("retention purge failed; will retry")
            self.stop.wait(self.retention.interval_s)

    def join(self, timeout: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)


# ------------------------------------------------------------------------------------------- oncoagent purge


def add_parser(sub: Any) -> None:
    p = sub.add_parser("purge", help="delete delivered inputs and results past their retention (retention: section)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted and the bytes freed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_purge)


def cmd_purge(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    if not settings.retention.enabled:
        print("retention is not configured (retention.instances_days, results_days, high_water_percent): "
              "nothing is purged")
        return 0
    if settings.store.url is None and not (settings.data_dir / "oncoagent.db").exists():
        raise StoreError(f"no OncoAgent database in {settings.data_dir} (has the daemon run with this --data-dir?)")
    from agent.store import Store

    store = Store.open(settings.database_url)
    try:
        report = purge(store, settings.retention, settings.paths, dry_run=args.dry_run)
    finally:
        store.close()
    if args.json:
        doc = {**asdict(report), "bytes": report.size}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for item in report.items:
        print(f"{verb:<12}  {item.what:<7} {item.ident:>6}  {_human(item.size):>9}  {item.label}  "
              f"delivered {_iso(item.done_at)}; {item.reason}")
    inputs = sum(i.what == "input" for i in report.items)
    print(f"{'would free' if report.dry_run else 'freed'} {report.size} bytes ({_human(report.size)}): "
          f"{inputs} input(s), {len(report.items) - inputs} result folder(s)"
          + (f"; {report.skipped} no longer eligible" if report.skipped else "")
          + (f"; {report.errors} file(s) could not be deleted" if report.errors else ""))
    if report.errors:
        raise OncoAgentError(f"{report.errors} file(s) could not be deleted (see the log)")
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
