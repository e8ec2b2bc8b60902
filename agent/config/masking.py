"""The settings as plain data for ``oncoagent config show``, with secrets masked."""

from __future__ import annotations

import re
from typing import Any

from agent.config.settings import Settings

_SECRET_KEYS = re.compile(r"password|secret|token|passphrase", re.IGNORECASE)


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets (URL passwords, keys named like secrets) masked."""
    data: dict[str, Any] = _mask(settings.model_dump(mode="json"))
    return data


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if _SECRET_KEYS.search(key) and value:
                out[key] = "***"
            else:
                out[key] = _mask(value)
        return out
    if isinstance(node, list):
        return [_mask(v) for v in node]
    if isinstance(node, str):
        return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", node)
    return node
