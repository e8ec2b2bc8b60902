"""Which results carry the "model not validated at this site" mark: the daemon's side of site validation.

A model is validated at this site when its weights (name and sha256) have an acceptance record in the data
directory (:mod:`pipelines.models.site_validation`, written by ``oncoagent evaluate … --accept``). The mark is
decided where each output is written, from the models the result used (``result.json``'s ``models``, the
store's ``jobs.models``):

* the AI's result: by the worker, right after the pipeline ran (:func:`agent.results.execute` records it in
  result.json as ``validation_mark``, and the reports print it): those files keep the answer of that moment;
* a reviewer's sign-off: at signing (:mod:`agent.signoff`);
* the worklist and its JSON API: when asked (:class:`PageMarks`), so a lab that accepts the weights later sees
  their results unmarked from then on (the documents already written keep their mark).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipelines.base import ModelRef
from pipelines.models.site_validation import validation_mark


def refs(models: Iterable[Mapping[str, Any]]) -> list[ModelRef]:
    """The ModelRefs of models as result.json and the store record them (dicts of name, version, sha256)."""
    return [ModelRef(str(m.get("name") or ""), str(m.get("version") or ""), str(m.get("sha256") or ""))
            for m in models]


def result_mark(data_dir: Path, models: Iterable[Mapping[str, Any]]) -> str | None:
    """The mark of a result that used ``models`` (as recorded), or None when all are validated here."""
    return validation_mark(data_dir, refs(models))


class PageMarks:
    """The marks of one page of cases: each set of models looked up once (a page holds few distinct ones)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._known: dict[tuple[tuple[str, str, str], ...], str | None] = {}

    def of(self, models: Iterable[Mapping[str, Any]]) -> str | None:
        used = refs(models)
        key = tuple((m.name, m.version, m.sha256) for m in used)
        if key not in self._known:
            self._known[key] = validation_mark(self.data_dir, used)
        return self._known[key]
