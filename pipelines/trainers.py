"""The contract of the ``oncoagent train NAME`` commands that pipeline families offer.

A trainer module (``pipelines.<family>.train_cli``) defines ``add_parsers(subparsers)``: it adds its commands to
the ``train`` command's sub-parsers and sets each command's handler as the ``trainer`` default
(``parser.set_defaults(trainer=handler)``). Whoever runs the command line calls the handler with the parsed
arguments and a :class:`TrainSettings`; the handler returns the exit status. Trainers read no configuration of
their own: what they need from the settings in force comes in :class:`TrainSettings`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainSettings:
    """What the trainers take from the settings in force."""

    data_dir: Path
    """The data directory: trained models go under ``<data_dir>/models`` unless a command says otherwise."""


TrainHandler = Callable[[argparse.Namespace, TrainSettings], int]
