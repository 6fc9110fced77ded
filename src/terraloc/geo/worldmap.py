"""Offline base map: country outlines decoded from the bundled Natural Earth 1:110m TopoJSON.

The data file is ``world-atlas`` 2.0.2 (ISC licence; Natural Earth is public domain), shipped in
``terraloc/data/vendor`` so that maps draw with no tile server or network.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.config import package_data


@functools.lru_cache(maxsize=2)
def _topology(scale: str = "110m") -> dict[str, Any]:
    """The bundled world-atlas TopoJSON at ``scale`` (``"110m"`` draws maps; ``"50m"`` is for lookups)."""
    with open(package_data("vendor", f"countries-{scale}.json"), encoding="utf-8") as fh:
        return dict(json.load(fh))


def _decode_arcs(topo: dict[str, Any]) -> list[NDArray[np.float64]]:
    scale = np.asarray(topo["transform"]["scale"], dtype=np.float64)
    translate = np.asarray(topo["transform"]["translate"], dtype=np.float64)
    # TopoJSON arcs are delta-encoded quantised positions.
    return [np.cumsum(np.asarray(a, dtype=np.float64), axis=0) * scale + translate for a in topo["arcs"]]


def _ring(arcs: list[NDArray[np.float64]], refs: list[int]) -> list[list[float]]:
    pts: list[NDArray[np.float64]] = []
    for ref in refs:
        arc = arcs[ref] if ref >= 0 else arcs[~ref][::-1]
        pts.append(arc if not pts else arc[1:])
    return np.concatenate(pts).tolist()


@functools.lru_cache(maxsize=1)
def countries_geojson() -> dict[str, Any]:
    """Country outlines as a GeoJSON FeatureCollection (``[lon, lat]`` positions, per GeoJSON)."""
    topo = _topology()
    arcs = _decode_arcs(topo)
    features = []
    for geom in topo["objects"]["countries"]["geometries"]:
        if geom["type"] == "Polygon":
            coords: Any = [_ring(arcs, r) for r in geom["arcs"]]
        elif geom["type"] == "MultiPolygon":
            coords = [[_ring(arcs, r) for r in poly] for poly in geom["arcs"]]
        else:
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {"name": geom.get("properties", {}).get("name", "")},
                "geometry": {"type": geom["type"], "coordinates": coords},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def country_rings() -> list[NDArray[np.float64]]:
    """Every exterior and interior ring as an ``(K, 2)`` array of ``(lon, lat)`` degrees."""
    rings: list[NDArray[np.float64]] = []
    for feat in countries_geojson()["features"]:
        geom = feat["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for poly in polys:
            rings.extend(np.asarray(r, dtype=np.float64) for r in poly)
    return rings
