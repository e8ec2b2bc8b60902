"""`oncoagent train NAME`: trainers get their settings as an argument, and their errors reach the command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import InputError
from pipelines.mri import train_cli as mri_train_cli
from pipelines.trainers import TrainSettings

REPO = Path(__file__).resolve().parents[2]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mri_train_cli.add_parsers(parser.add_subparsers(dest="train_command", required=True))
    return parser.parse_args(argv)


def test_a_trainer_puts_its_models_under_the_data_dir_it_is_given(tmp_path: Path) -> None:
    args = _parse("classifier", "--data", str(tmp_path / "no-cases"))
    assert args.trainer is mri_train_cli.cmd_train_classifier
    with pytest.raises(InputError, match="no-cases: not a folder of cases"):
        args.trainer(args, TrainSettings(data_dir=tmp_path / "data"))
    assert (tmp_path / "data" / "models" / "mri").is_dir()


def test_a_pipeline_error_in_a_trainer_is_a_failed_command_with_its_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(tmp_path / "d"), "train", "classifier",
         "--data", str(tmp_path / "no-cases")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"oncoagent: {tmp_path / 'no-cases'}: not a folder of cases" in proc.stderr
    assert (tmp_path / "d" / "models" / "mri").is_dir()
