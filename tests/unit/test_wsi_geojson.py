"""QuPath-importable GeoJSON of detections."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.wsi.geojson import feature_collection, write_geojson
from pipelines.wsi.labels import CTC, CTM
from pipelines.wsi.merge import Detection


def test_features_are_closed_rectangles_with_class_colour_and_confidence(tmp_path: Path) -> None:
    found = [
        Detection(CTC, 0.91234, 100.04, 200.0, 140.0, 236.5),
        Detection(CTM, 0.8, 90.0, 190.0, 300.0, 260.0, members=3, source="model+grouping"),
    ]
    write_geojson(tmp_path / "d.geojson", found, "slide-1.tiff")
    doc = json.loads((tmp_path / "d.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    ctc, ctm = doc["features"]
    assert ctc["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[100.0, 200.0], [140.0, 200.0], [140.0, 236.5], [100.0, 236.5], [100.0, 200.0]]],
    }
    assert ctc["properties"]["objectType"] == "detection"
    assert ctc["properties"]["classification"] == {"name": "CTC", "color": [230, 40, 40]}
    assert ctc["properties"]["measurements"] == {"Confidence": 0.9123}
    assert ctm["properties"]["measurements"] == {"Confidence": 0.8, "CTC members": 3}
    # ids are stable for the same result and differ between objects
    again = feature_collection(found, "slide-1.tiff")
    assert [f["id"] for f in again["features"]] == [ctc["id"], ctm["id"]] and ctc["id"] != ctm["id"]
