"""Ports and the private network namespace the suite runs in (see tests/run-isolated.sh)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def network_isolated() -> bool:
    """True inside a network namespace whose only interface is loopback."""
    return {name for _, name in socket.if_nameindex()} == {"lo"}
