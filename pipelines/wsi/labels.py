"""The detector's classes: their indices in the model, names in results and colours in QuPath."""

from __future__ import annotations

CTC, CTM = 0, 1
CLASS_NAMES: tuple[str, ...] = ("CTC", "CTM")
CLASS_COLOURS_RGB: dict[str, tuple[int, int, int]] = {"CTC": (230, 40, 40), "CTM": (250, 170, 0)}
