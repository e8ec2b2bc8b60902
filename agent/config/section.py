"""The base of every settings section: unknown keys are errors and a built section is immutable."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_distinct(names: Iterable[str], what: str) -> None:
    """ValueError naming the repeated ones when ``names`` (of rules, batches…) are not distinct."""
    seen = list(names)
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise ValueError(f"unique {what} names; repeated: {', '.join(repeated)}")
