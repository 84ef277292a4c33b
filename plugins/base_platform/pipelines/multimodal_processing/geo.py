"""GeoJSON (shapely, pyproj): a row per Feature of a FeatureCollection, or one for a file of a
bare Feature or geometry; each validated, repaired where ``make_valid`` can, reprojected to the
spec's CRS, with bbox, area, centroid and WKB. ``feature`` is the feature's index in the
collection (0 for a bare one): with ``sha256`` it is the row's key.

A feature whose geometry is missing, of no GeoJSON type, cannot be built (a ring of two points)
or that ``make_valid`` cannot turn into a valid geometry of the same dimension, or whose
``properties`` is not an object, is quarantined with the reason; the collection's others are
stored. A file that is no GeoJSON at all is quarantined whole.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.multimodal_processing.media_kinds import (
    Rows,
    SideWriter,
    Unreadable,
    nesting_depth,
    reason,
)

if TYPE_CHECKING:
    from pyproj import Transformer

    from base_platform.pipelines.spec import MediaSource

GEOMETRY_TYPES = frozenset(
    (
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    )
)


@cache
def transformer(source: str, target: str) -> Transformer:
    from pyproj import Transformer

    return Transformer.from_crs(source, target, always_xy=True)


def _geometry(member: Any) -> Any:
    """A GeoJSON geometry object as shapely's; a Feature or anything else in its place is not one
    (shapely's ``shape`` would unwrap a Feature nested as a geometry)."""
    import shapely
    from shapely.geometry import shape

    kind = member.get("type") if isinstance(member, dict) else type(member).__name__
    if kind not in GEOMETRY_TYPES:
        raise Unreadable(f"not a GeoJSON geometry: type {kind!r}")
    try:
        return shape(member)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise Unreadable(f"not a GeoJSON geometry: {type(exc).__name__}: {exc}") from exc


def _shape(document: Any) -> tuple[Any, dict[str, Any]]:
    """A Feature's or a bare geometry's shape, and the Feature's properties."""
    if not isinstance(document, dict) or document.get("type") != "Feature":
        return _geometry(document), {}
    properties = document.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise Unreadable(
            f"a Feature's properties must be an object or null, not a {type(properties).__name__}"
        )
    if document.get("geometry") is None:
        raise Unreadable("a Feature without a geometry")
    return _geometry(document["geometry"]), properties or {}


def _row(document: Any, source: MediaSource) -> dict[str, Any]:
    import shapely
    from shapely.validation import explain_validity, make_valid

    geometry, properties = _shape(document)
    repaired = False
    if not geometry.is_valid:
        why = explain_validity(geometry)
        fixed = make_valid(geometry)
        if (
            not fixed.is_valid
            or fixed.is_empty
            or shapely.get_dimensions(fixed) != shapely.get_dimensions(geometry)
        ):
            raise Unreadable(f"invalid geometry that make_valid cannot repair: {why}")
        geometry, repaired = fixed, True
    project = transformer(source.source_crs, source.crs).transform
    same = source.crs == source.source_crs
    projected = geometry if same else shapely.transform(geometry, project, interleaved=False)
    min_x, min_y, max_x, max_y = projected.bounds
    centroid = projected.centroid
    return {
        "geometry": shapely.to_wkb(projected),
        "geometry_type": projected.geom_type,
        "crs": source.crs,
        "min_x": repr(min_x),
        "min_y": repr(min_y),
        "max_x": repr(max_x),
        "max_y": repr(max_y),
        "area": repr(projected.area),
        "centroid_x": repr(centroid.x),
        "centroid_y": repr(centroid.y),
        "repaired": str(repaired).lower(),
        "properties": json.dumps(properties, sort_keys=True),
    }


def extract(
    data: bytes, name: str, digest: str, source: MediaSource, side: SideWriter
) -> dict[str, Any] | Rows:
    if (depth := nesting_depth(data)) > source.max_depth:
        raise Unreadable(f"nested {depth} deep, more than max_depth ({source.max_depth})")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise Unreadable(f"not GeoJSON: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(document, dict) and document.get("type") == "FeatureCollection"):
        return {"feature": "0"} | _row(document, source)
    features = document.get("features")
    if not isinstance(features, list):
        raise Unreadable(f"a FeatureCollection's features must be a list, not a {type(features).__name__}")
    rows: list[dict[str, Any]] = []
    rejects: list[str] = []
    for index, feature in enumerate(features):
        try:
            rows.append({"feature": str(index)} | _row(feature, source))
        except Exception as exc:  # a crafted feature: its own failure, never its collection's
            rejects.append(f"feature {index}: {reason(exc)}")
    return Rows(rows, rejects)
