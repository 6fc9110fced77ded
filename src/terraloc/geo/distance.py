"""Great-circle distances by the haversine formula (R = 6371.0088 km, the mean Earth radius)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

EARTH_RADIUS_KM = 6371.0088


def haversine_km(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Distance in km between matching rows of ``a`` and ``b``.

    Args:
        a: ``(..., 2)`` ``(lat, lon)`` in degrees.
        b: ``(..., 2)`` ``(lat, lon)`` in degrees, broadcastable against ``a``.

    Returns:
        ``(...)`` distances in km.
    """
    pa = np.radians(np.asarray(a, dtype=np.float64))
    pb = np.radians(np.asarray(b, dtype=np.float64))
    dlat = pb[..., 0] - pa[..., 0]
    dlon = pb[..., 1] - pa[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(pa[..., 0]) * np.cos(pb[..., 0]) * np.sin(dlon / 2) ** 2
    # Clip guards arcsin against h drifting just above 1 for antipodal points.
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def pairwise_haversine_km(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """All distances in km between rows of ``a`` ``(N, 2)`` and ``b`` ``(M, 2)``: ``(N, M)``."""
    aa = np.asarray(a, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    return haversine_km(aa[:, None, :], bb[None, :, :])
