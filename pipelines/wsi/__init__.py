"""Whole-slide image handling: reading, resolution, tiling and detection."""
