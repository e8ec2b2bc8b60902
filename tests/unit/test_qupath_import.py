"""QuPath GeoJSON as CTC/CTM ground truth: points, polygons, classes, and bad files refused with reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import InputError
from pipelines.wsi.qupath_import import (
    annotated_slides,
    annotation_file,
    read_annotations,
    to_feature_collection,
)

MPP = (0.5, 0.5)


def feature(name: str | None, geometry: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": "annotation"}
    if name is not None:
        props["classification"] = name if plain else {"name": name, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props}


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_polygons_points_and_classes_become_boxes(tmp_path: Path) -> None:
    doc = {"type": "FeatureCollection", "features": [
        feature("CTC", {"type": "Polygon", "coordinates": [[[10, 20], [30, 20], [30, 50], [10, 50], [10, 20]]]}),
        feature("ctm", {"type": "MultiPolygon", "coordinates": [
            [[[100, 100], [120, 100], [120, 120], [100, 100]]], [[[130, 140], [150, 140], [150, 160], [130, 140]]]]}),
        feature("CTC", {"type": "Point", "coordinates": [500, 600]}),
        feature("CTM", {"type": "MultiPoint", "coordinates": [[1000, 1000], [2000, 2000]]}, plain=True),
        feature("Tumor", {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]}),
        feature(None, {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]}),
    ]}
    ann = read_annotations(write(tmp_path / "a.geojson", doc), MPP)
    assert ann.boxes[0] == (0, 10, 20, 30, 50)
    assert ann.boxes[1] == (1, 100, 100, 150, 160)  # one cluster: the hull of its polygons
    # a CTC point: a 20 µm square at 0.5 µm/px; CTM points: 50 µm squares
    assert ann.boxes[2] == (0, 480, 580, 520, 620)
    assert ann.boxes[3] == (1, 950, 950, 1050, 1050) and ann.boxes[4] == (1, 1950, 1950, 2050, 2050)
    assert ann.from_point == [False, False, True, True, True] and ann.points == 3
    assert ann.counts() == {"CTC": 2, "CTM": 3}
    assert ann.skipped == {"Tumor": 1, "unclassified": 1}
    assert ann.box_array().shape == (5, 5) and len(ann.outlines) == 5


def test_a_bare_list_of_features_and_a_round_trip(tmp_path: Path) -> None:
    boxes = [(0, 1.0, 2.0, 11.0, 12.0), (1, 50.0, 50.0, 90.0, 80.0)]
    collection = to_feature_collection(boxes)
    ann = read_annotations(write(tmp_path / "b.geojson", collection["features"]), MPP)
    assert ann.boxes == boxes and ann.points == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a readable GeoJSON file"),
        (json.dumps({"type": "Topology"}), "not GeoJSON features"),
        (json.dumps({"type": "FeatureCollection", "features": [1, 2]}), "must be a list of GeoJSON Feature"),
        (json.dumps([feature("CTC", {"type": "LineString", "coordinates": [[0, 0], [5, 5]]})]),
         "feature 1: a CTC must be a Point, MultiPoint, Polygon or MultiPolygon, not 'LineString'"),
        (json.dumps([feature("CTM", {"type": "Polygon", "coordinates": [[]]})]), "feature 1: no usable coordinates"),
        (json.dumps([feature("CTC", {"type": "Point", "coordinates": ["a", "b"]})]), "feature 1: coordinates are not"),
        (json.dumps([feature("CTC", {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [9, 0], [0, 0]]]})]),
         "feature 1: the CTC outline encloses no area"),
        (json.dumps([{"type": "Feature", "properties": {"classification": {"name": "CTC"}}}]),
         "feature 1: has no geometry"),
    ],
)
def test_bad_files_are_refused_with_the_file_and_the_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_annotations(path, MPP)
    assert str(err.value).startswith("bad.geojson: ") and message in str(err.value)


def test_slides_are_found_by_the_geojson_beside_them(tmp_path: Path) -> None:
    for name in ("a.svs", "b.tiff", "c.ndpi", "b.tiff.truth.json"):
        (tmp_path / name).write_bytes(b"x")
    write(tmp_path / "a.geojson", [])
    write(tmp_path / "b.tiff.geojson", [])
    assert annotated_slides(tmp_path) == [tmp_path / "a.svs", tmp_path / "b.tiff"]
    assert annotation_file(tmp_path / "c.ndpi") is None
    assert annotated_slides(tmp_path / "missing") == []
