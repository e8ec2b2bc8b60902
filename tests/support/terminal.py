"""Running a command with its stderr on a pseudo-terminal, as a user at a terminal sees it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OnTerminal:
    returncode: int
    stdout: str  # a pipe: what a script reading the command's output gets
    screen: str  # everything written to the terminal (stderr), control characters included


def run_on_terminal(argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float,
                    columns: int = 120) -> OnTerminal:
    """Run ``argv`` with stderr on a new pseudo-terminal of ``columns`` (a new one is 0 wide: tqdm would draw
    nothing) and stdout on a pipe; read the terminal until the command closes it."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=terminal) as proc:
        os.close(terminal)
        screen = bytearray()
        try:
            while chunk := _read(controller):  # the stdout pipe holds a few lines: it cannot fill meanwhile
                screen += chunk
        finally:
            os.close(controller)
        stdout = proc.communicate(timeout=timeout)[0]
    return OnTerminal(proc.returncode, stdout.decode(errors="replace"), screen.decode(errors="replace"))


def _read(controller: int) -> bytes:
    try:
        return os.read(controller, 65536)
    except OSError:  # EIO: the command and its terminal are gone
        return b""
