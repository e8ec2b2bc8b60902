"""Model cards: one Markdown page per trained model, written beside its weights."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    kind: str  # "lesion segmenter" or "malignancy classifier"
    weights_file: str
    sha256: str
    method: Sequence[str]
    training_data: Sequence[str]
    metrics: Mapping[str, Any]
    figures: Sequence[str] = ()
    command: str = ""
    limitations: Sequence[str] = field(default_factory=lambda: [
        "Trained on generated (synthetic) MR series unless the training data section says otherwise: figures "
        "on generated data say that the code path works, not how it performs on patients.",
        "Research use only; not a medical device. Every result needs review by a radiologist.",
    ])

    def render(self) -> str:
        created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        lines = [
            f"# Model card: {self.name} {self.version}",
            "",
            f"- Kind: {self.kind}",
            f"- Weights: `{self.weights_file}` (sha256 `{self.sha256}`)",
            f"- Created: {created}",
            "",
            "## Method",
            "",
            *[f"- {line}" for line in self.method],
            "",
            "## Training data",
            "",
            *[f"- {line}" for line in self.training_data],
            "",
            "## Evaluation",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {key} | {_show(value)} |" for key, value in self.metrics.items()],
            "",
        ]
        if self.figures:
            lines += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in self.figures], ""]
        lines += ["## Limitations", "", *[f"- {line}" for line in self.limitations], ""]
        if self.command:
            lines += ["## Reproduce", "", "```", self.command, "```", ""]
        return "\n".join(lines)

    def write(self, path: Path) -> Path:
        path.write_text(self.render(), encoding="utf-8")
        return path


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value)
    return str(value)
