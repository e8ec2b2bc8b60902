"""A small tmpfs mounted over a test's folder: a disk that fills. Only inside a private mount namespace
(tests/run-isolated.sh makes one), so nothing outside the test run ever sees it; elsewhere the test skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PRIVATE_MOUNTS_ENV = "OA_TEST_PRIVATE_MOUNTS"  # set by tests/run-isolated.sh inside its mount namespace


@contextmanager
def tmpfs(folder: Path, size_kb: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_kb`` KiB over ``folder`` (created if missing) for the block; skip the test
    with the reason when mounting is not permitted here."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    if os.environ.get(PRIVATE_MOUNTS_ENV) != "1":
        pytest.skip("no private mount namespace to mount a tmpfs in: run the tests through tests/run-isolated.sh")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path, leave_kb: int) -> Path:
    """Write a filler file into ``folder`` until about ``leave_kb`` KiB are free on its filesystem."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free - leave_kb * 1024
    with filler.open("wb") as out:
        out.write(b"\0" * max(free, 0))
    return filler
