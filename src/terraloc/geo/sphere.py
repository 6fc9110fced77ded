"""Points on the unit sphere: conversions and averaging (never average degrees)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def to_unit_vectors(latlon: ArrayLike) -> NDArray[np.float64]:
    """Convert ``(N, 2)`` degrees to ``(N, 3)`` unit vectors (x toward lon 0, z toward the north pole)."""
    rad = np.radians(np.asarray(latlon, dtype=np.float64))
    lat, lon = rad[..., 0], rad[..., 1]
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def from_unit_vectors(xyz: ArrayLike) -> NDArray[np.float64]:
    """Convert ``(N, 3)`` vectors (any norm > 0) back to ``(N, 2)`` degrees, lon in ``[-180, 180]``."""
    v = np.asarray(xyz, dtype=np.float64)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    v = v / np.where(norm == 0, 1.0, norm)
    lat = np.degrees(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    return np.stack([lat, lon], axis=-1)


def spherical_mean(latlon: ArrayLike, weights: ArrayLike | None = None) -> NDArray[np.float64]:
    """Weighted mean location of ``(N, 2)`` degrees as the normalised mean unit vector.

    Args:
        latlon: ``(N, 2)`` coordinates in degrees, N >= 1.
        weights: optional ``(N,)`` non-negative weights.

    Returns:
        ``(2,)`` mean ``(lat, lon)``; the mean of 179.9 and -179.9 longitude is 180.
        Antipodal sets (mean vector of zero length) return the first point.
    """
    pts = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        raise ValueError("spherical_mean of an empty set")
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = (to_unit_vectors(pts) * w[:, None]).sum(axis=0)
    if np.linalg.norm(mean) < 1e-12:
        return pts[0].copy()
    return from_unit_vectors(mean)
