"""GeoJSON (shapely, pyproj): one Feature or geometry per file, validated, repaired where
``make_valid`` can, reprojected to the spec's CRS, with bbox, area, centroid and WKB.

A geometry that cannot be built (a ring of two points) or that ``make_valid`` cannot turn into a
valid geometry of the same dimension is quarantined with the reason shapely gives.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.multimodal_processing.media_kinds import SideWriter, Unreadable, nesting_depth

if TYPE_CHECKING:
    from pyproj import Transformer

    from base_platform.pipelines.spec import MediaSource


@cache
def transformer(source: str, target: str) -> Transformer:
    from pyproj import Transformer

    return Transformer.from_crs(source, target, always_xy=True)


def _shape(document: Any) -> tuple[Any, dict[str, Any]]:
    from shapely.geometry import shape

    if document.get("type") == "Feature":
        return shape(document["geometry"]), document.get("properties") or {}
    if document.get("type") == "FeatureCollection":
        raise Unreadable(
            f"a FeatureCollection of {len(document.get('features', []))} features: one feature per file"
        )
    return shape(document), {}


def extract(data: bytes, name: str, digest: str, source: MediaSource, side: SideWriter) -> dict[str, Any]:
    import shapely
    from shapely.validation import explain_validity, make_valid

    if (depth := nesting_depth(data)) > source.max_depth:
        raise Unreadable(f"nested {depth} deep, more than max_depth ({source.max_depth})")
    try:
        geometry, properties = _shape(json.loads(data))
    except Unreadable:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise Unreadable(f"not a GeoJSON geometry: {type(exc).__name__}: {exc}") from exc
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
