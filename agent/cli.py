"""The ``oncoagent`` command: daemon, one-shot processing, status, jobs, batches and configuration.

Exit status: 0 success, 1 some work failed, 2 bad configuration or usage, 3 the data directory is in use.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from agent import __version__, batch_commands, evaluate_commands, model_commands, store_commands, user_commands
from agent.config import LoadedSettings, load_settings, masked
from agent.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, ConfigError, DataDirLockedError, OncoAgentError
from agent.ops import audit_commands, export_commands
from agent.runtime import prepare_process
from pipelines.errors import PipelineError, PipelineOptionsError
from pipelines.progress import Progress, Throttled

log = logging.getLogger("agent.cli")

BAR_INTERVAL_S = 0.2  # how often a run's bar is drawn again at most


# Each module defines add_parsers(subparsers): its `oncoagent train NAME` commands, each with a `trainer` default
# taking (args, TrainSettings) and returning an exit status (see pipelines.trainers). Heavy imports stay inside.
TRAINER_MODULES = ("pipelines.wsi.train_cli", "pipelines.mri.train_cli")


def _available(modules: Sequence[str]) -> list[str]:
    found = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                found.append(module)
        except ModuleNotFoundError:
            continue
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncoagent",
        description="OncoAgent: scans in (DICOM, scanner folders), CTC/CTM and MRI tumour findings out.",
    )
    parser.add_argument("--version", action="version", version=f"oncoagent {__version__}")
    parser.add_argument("--config", type=Path, help="YAML config file (default: config/oncoagent.yaml)")
    parser.add_argument("--data-dir", type=Path, help="folder for all state: database, files, results (./var)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["human", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: ingest, workers, schedules (SIGTERM stops it)")
    run.add_argument("--workers", type=int, help="number of worker processes")
    run.add_argument("--scp-port", type=int, help="DICOM port to listen on (scp.port)")
    run.add_argument("--scp-aet", help="our DICOM AE title (scp.ae_title)")
    run.set_defaults(handler=cmd_run)

    process = sub.add_parser("process", help="process files or folders once, without a daemon")
    process.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="slides, DICOM files or folders")
    process.add_argument("--out", type=Path, help="results folder (default: <data-dir>/results/process)")
    process.add_argument("--pipeline", help="use this pipeline instead of the routing rules")
    process.set_defaults(handler=cmd_process)

    store_commands.add_parsers(sub)
    batch_commands.add_parser(sub)  # oncoagent batch PATHS | runs | show RUN
    audit_commands.add_parser(sub)  # oncoagent audit list | export
    user_commands.add_parser(sub)  # oncoagent users add | list | passwd | disable
    export_commands.add_parser(sub)  # oncoagent export training-data
    model_commands.add_parser(sub)  # oncoagent models: each installed model's site-validation status
    evaluate_commands.add_parser(sub)  # oncoagent evaluate detector|segmenter|classifier|mri

    config = sub.add_parser("config", help="check or show the configuration in force")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("check", help="validate and report").set_defaults(handler=cmd_config_check)
    show = config_sub.add_parser("show", help="print the merged settings (secrets masked)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_config_show)

    train = sub.add_parser("train", help="train a model on your own data or on generated data")
    train.set_defaults(handler=cmd_train)
    train_sub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    for module in _available(TRAINER_MODULES):
        importlib.import_module(module).add_parsers(train_sub)

    demo = sub.add_parser("demo", help="generate sample inputs and run them through the daemon")
    demo.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "log.level": args.log_level,
        "log.format": args.log_format,
        "executor.workers": getattr(args, "workers", None),
        "scp.port": getattr(args, "scp_port", None),
        "scp.ae_title": getattr(args, "scp_aet", None),
    }
    try:
        loaded = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        prepare_process(loaded.settings.log.level, loaded.settings.log.format, loaded.settings.plugins)
    except ConfigError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handler: Callable[[argparse.Namespace, LoadedSettings], int] = args.handler
    try:
        return handler(args, loaded)
    except (ConfigError, PipelineOptionsError) as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DataDirLockedError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (OncoAgentError, PipelineError) as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.daemon import Daemon

    status = Daemon(loaded.settings).run()
    # Everything is committed, every worker joined, every thread of ours ended and the lock released: leave
    # without the interpreter's teardown of torch, ultralytics and MONAI, which takes seconds and saves nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_process(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.oneshot import process
    from agent.router import Router
    from pipelines import registry

    settings = loaded.settings
    router = Router(settings.routing.rules)
    if args.pipeline is None:
        router.check_pipelines(registry.names())
    out: Path = args.out or settings.paths.results / "process"
    tty = sys.stderr.isatty()
    registry.validate_options(settings.pipelines)
    with _logs_above_bars() if tty else nullcontext():
        outcomes = process(settings, router, args.paths, out, args.pipeline, progress=_progress_bar if tty else iter,
                           watch=_run_bar if tty else None)
    failed = 0
    for outcome in outcomes:
        if outcome.ok:
            print(f"ok      {outcome.name}: {outcome.detail}/result.json ({outcome.pipeline})")
        else:
            failed += 1
            print(f"FAILED  {outcome.name}: {outcome.detail}")
    print(f"{len(outcomes) - failed} succeeded, {failed} failed; results in {out}")
    return EXIT_FAILED if failed or not outcomes else 0


def _logs_above_bars() -> AbstractContextManager[Any]:
    from tqdm.contrib.logging import logging_redirect_tqdm

    redirect: AbstractContextManager[Any] = logging_redirect_tqdm()  # log records go through tqdm, above the bars
    return redirect


def _progress_bar(items: Any) -> Any:
    from tqdm import tqdm

    return tqdm(list(items), desc="processing", unit="input", file=sys.stderr)


@contextmanager
def _run_bar(name: str) -> Iterator[Progress]:
    """A bar under the inputs' bar for one input's run: a slide's tiles, an MR series' stages; gone when done."""
    from tqdm import tqdm

    bar: Any = tqdm(desc=name, file=sys.stderr, position=1, leave=False,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")

    def show(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_description_str(f"{name} {stage}", refresh=False)
        bar.refresh()

    try:
        yield Throttled(show, interval_s=BAR_INTERVAL_S)
    finally:
        bar.close()



def cmd_config_check(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.router import Router
    from pipelines import registry

    settings = loaded.settings
    Router(settings.routing.rules).check_pipelines(registry.names())
    registry.validate_options(settings.pipelines)
    problems = []
    for folder in settings.ingest.folders:
        if not folder.is_dir():
            problems.append(f"ingest.folders: {folder} is not a folder")
    source = loaded.config_file or "built-in defaults"
    if problems:
        print(f"configuration from {source} has problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"configuration OK ({source}); pipelines: {', '.join(registry.names())}")
    return 0


def cmd_config_show(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    data = masked(loaded.settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# from {loaded.config_file or 'built-in defaults'}, environment and flags")
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_train(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from pipelines.trainers import TrainHandler, TrainSettings

    trainer: TrainHandler = args.trainer
    return trainer(args, TrainSettings(data_dir=loaded.settings.data_dir))


def cmd_demo(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.demo import run_demo

    return run_demo(loaded, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
