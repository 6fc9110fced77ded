"""Confidence region: the smallest set of candidate places whose probability covers a level (90%).

Places are taken by decreasing probability until their share of the candidates' total
probability reaches the level. The region is drawn as discs of ``radius_km`` around those places
(the distinct-place merge radius: each place stands for everything merged within it) and written
as a GeoJSON ``MultiPolygon`` (64-gon discs, ``[lon, lat]`` order). The probability is the head's
own (normalised over its candidates), not a calibrated one: the calibrated statement is the
``confidence`` object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from terraloc.geo import EARTH_RADIUS_KM

DEFAULT_LEVEL = 0.9


def region_members(probs: ArrayLike, level: float = DEFAULT_LEVEL) -> tuple[NDArray[np.int64], float]:
    """Indices (by decreasing probability) of the smallest set covering ``level`` of the total, and its share."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    total = float(p.sum())
    if len(p) == 0 or total <= 0:
        return np.zeros(0, dtype=np.int64), 0.0
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order]) / total
    m = int(np.searchsorted(cum, level - 1e-12) + 1)
    m = min(m, len(p))
    return order[:m].astype(np.int64), float(cum[m - 1])


def disc(lat: float, lon: float, radius_km: float, n: int = 64) -> list[list[float]]:
    """A closed ring ``[[lon, lat], ...]`` approximating the spherical disc of ``radius_km``."""
    la, lo = np.radians(lat), np.radians(lon)
    ang = radius_km / EARTH_RADIUS_KM
    brg = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lat2 = np.arcsin(np.sin(la) * np.cos(ang) + np.cos(la) * np.sin(ang) * np.cos(brg))
    lon2 = lo + np.arctan2(np.sin(brg) * np.sin(ang) * np.cos(la), np.cos(ang) - np.sin(la) * np.sin(lat2))
    lon_deg = (np.degrees(lon2) + 180.0) % 360.0 - 180.0
    ring = [[round(float(a), 5), round(float(b), 5)] for a, b in zip(lon_deg, np.degrees(lat2), strict=True)]
    return [*ring, ring[0]]


def confidence_region(
    coords: ArrayLike, probs: ArrayLike, *, level: float = DEFAULT_LEVEL, radius_km: float = 25.0
) -> dict[str, Any]:
    """A GeoJSON geometry + properties of one image's confidence region.

    Args:
        coords: ``(k, 2)`` distinct places (lat, lon degrees).
        probs: ``(k,)`` their probabilities.
        level: the share of probability to cover.
        radius_km: disc radius drawn around each member place.

    Returns:
        ``{"geometry": MultiPolygon, "places": [[lat, lon], ...], "level", "covered", "radius_km"}``;
        ``covered`` is the share actually reached (less than ``level`` only when the candidates
        run out).
    """
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    idx, covered = region_members(probs, level)
    places = [[round(float(xy[i, 0]), 6), round(float(xy[i, 1]), 6)] for i in idx]
    r = max(float(radius_km), 1.0)
    return {
        "geometry": {"type": "MultiPolygon", "coordinates": [[disc(a, b, r)] for a, b in places]},
        "places": places,
        "level": level,
        "covered": round(covered, 4),
        "radius_km": r,
    }
