"""Slide resolution in µm per level-0 pixel, and whether a declared one can be believed.

Scanners write it in vendor metadata that openslide reports as ``openslide.mpp-x/y``. Generic TIFF writers
often leave a 72- or 96-dpi screen default there (about 353 or 265 µm/px), which no microscope produces.
"""

from __future__ import annotations

from collections.abc import Mapping

# Microscope objectives from 100x oil (~0.05 µm/px) to 1.25x overview (~8 µm/px) with margin.
PLAUSIBLE_MPP_UM = (0.03, 20.0)


def declared_mpp(properties: Mapping[str, str]) -> tuple[float, float] | None:
    """The (x, y) resolution the slide declares, or None when it declares none."""
    try:
        x = float(properties["openslide.mpp-x"])
        y = float(properties["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    return (x, y)


def is_plausible(mpp: tuple[float, float]) -> bool:
    lo, hi = PLAUSIBLE_MPP_UM
    return all(lo <= v <= hi for v in mpp)
