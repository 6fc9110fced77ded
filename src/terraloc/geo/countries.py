"""Which Natural Earth country polygon contains a coordinate (bundled 1:50m map, offline).

Polygons come from world-atlas 2.0.2's ``countries-50m.json`` (241 countries and territories,
~750 KB), read and decoded once on first use and cached; the 1:110m file stays the one that
draws maps (:mod:`terraloc.geo.worldmap`). Each country's id is its ISO 3166-1 numeric code as
a string (``"250"`` for France); world-atlas gives five areas no code: Kosovo, N. Cyprus,
Somaliland, Indian Ocean Ter. and Siachen Glacier (``id == ""``, name set).
Point-in-polygon uses ring parity (even-odd) in ``(lon, lat)`` degrees, so holes count.
Rings that cross the antimeridian (Fiji, Russia) are unwrapped to continuous longitudes and
points are tested at ``lon`` and ``lon ± 360``; a ring that circles a pole (Antarctica) is closed
through that pole.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


@functools.lru_cache(maxsize=1)
def _countries() -> list[tuple[str, str, list[NDArray[np.float64]]]]:
    from terraloc.geo.worldmap import _decode_arcs, _ring, _topology

    topo = _topology("50m")
    arcs = _decode_arcs(topo)
    out = []
    for geom in topo["objects"]["countries"]["geometries"]:
        if geom["type"] not in ("Polygon", "MultiPolygon"):
            continue
        polys: Any = [geom["arcs"]] if geom["type"] == "Polygon" else geom["arcs"]
        rings = [_unwrap(np.asarray(_ring(arcs, r), dtype=np.float64)) for poly in polys for r in poly]
        out.append((str(geom.get("id", "") or ""), str(geom.get("properties", {}).get("name", "")), rings))
    return out


def _unwrap(ring: NDArray[np.float64]) -> NDArray[np.float64]:
    """Continuous longitudes (no jump over 180 degrees); a pole-circling ring closed via its pole."""
    lon = ring[:, 0].copy()
    jumps = np.diff(lon)
    shift = -360.0 * np.round(jumps / 360.0) * (np.abs(jumps) > 180)
    lon[1:] += np.cumsum(shift)
    out = np.stack([lon, ring[:, 1]], axis=1)
    if abs(out[-1, 0] - out[0, 0]) > 180:  # circles a pole: go down to it and back
        pole = -90.0 if out[:, 1].mean() < 0 else 90.0
        out = np.concatenate([out, [[out[-1, 0], pole], [out[0, 0], pole]], out[:1]])
    return out


def _inside(ring: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Even-odd crossing test of points ``(x, y)`` against one closed ring ``(K, 2)``."""
    x0, y0 = ring[:-1, 0][None, :], ring[:-1, 1][None, :]
    x1, y1 = ring[1:, 0][None, :], ring[1:, 1][None, :]
    xs, ys = x[:, None], y[:, None]
    crosses = (y0 > ys) != (y1 > ys)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
    return (np.count_nonzero(crosses & (xs < xint), axis=1) % 2) == 1  # type: ignore[no-any-return]


def country_at(latlon: ArrayLike) -> tuple[list[str], list[str]]:
    """ISO 3166-1 numeric id and Natural Earth name of the polygon holding each ``(lat, lon)``.

    Returns:
        Two lists of ``N`` strings; ``("", "")`` for a point in no polygon (sea, or too small an
        island for the 1:50m map).
    """
    arr = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    ids, names = [""] * len(arr), [""] * len(arr)
    lat, lon = arr[:, 0], arr[:, 1]
    for cid, name, rings in _countries():
        lo = min(float(r[:, 0].min()) for r in rings)
        hi = max(float(r[:, 0].max()) for r in rings)
        bl = min(float(r[:, 1].min()) for r in rings)
        bh = max(float(r[:, 1].max()) for r in rings)
        lon_ok = (
            ((lon >= lo) & (lon <= hi))
            | ((lon + 360 >= lo) & (lon + 360 <= hi))
            | ((lon - 360 >= lo) & (lon - 360 <= hi))
        )
        cand = np.flatnonzero(lon_ok & (lat >= bl) & (lat <= bh))
        if len(cand) == 0:
            continue
        parity = np.zeros(len(cand), dtype=bool)
        for shift in (0.0, 360.0, -360.0):
            p = np.zeros(len(cand), dtype=bool)
            for r in rings:
                p ^= _inside(r, lon[cand] + shift, lat[cand])
            parity |= p
        for i in cand[parity]:
            if not ids[i] and not names[i]:
                ids[i], names[i] = cid, name
    return ids, names
