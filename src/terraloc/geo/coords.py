"""Coordinate validation at the edges of the system (files, CLI, HTTP)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from terraloc.errors import InputError


def validate_latlon(
    coords: ArrayLike,
    *,
    source: str | None = None,
    rows: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Check that ``coords`` is an ``(N, 2)`` array of valid ``(lat, lon)`` degrees.

    Valid means finite, ``-90 <= lat <= 90`` and ``-180 <= lon <= 180``; nothing is wrapped.

    Args:
        coords: ``(N, 2)`` or ``(2,)`` latitudes and longitudes in degrees.
        source: file or argument name used in the error message.
        rows: optional ``(N,)`` line numbers reported for the offending row.

    Returns:
        A float64 ``(N, 2)`` array.

    Raises:
        InputError: naming the first offending row and the problem.
    """
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"expected (N, 2) lat/lon coordinates, got shape {arr.shape}", path=source)
    lat, lon = arr[:, 0], arr[:, 1]
    checks = (
        (~np.isfinite(lat), "lat", "latitude is not a finite number"),
        (~np.isfinite(lon), "lon", "longitude is not a finite number"),
        (np.abs(lat) > 90, "lat", "latitude {v} is outside [-90, 90]"),
        (np.abs(lon) > 180, "lon", "longitude {v} is outside [-180, 180]"),
    )
    for bad, field, msg in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = None if rows is None else int(np.asarray(rows)[i])
            value = arr[i, 0 if field == "lat" else 1]
            raise InputError(msg.format(v=value), path=source, row=row, field=field)
    return arr


def normalize_lon(lon: ArrayLike) -> NDArray[np.float64]:
    """Wrap longitudes (degrees) into ``[-180, 180]`` for coordinates the system produces."""
    arr = np.asarray(lon, dtype=np.float64)
    wrapped = (arr + 180.0) % 360.0 - 180.0
    # Keep +180 as +180 rather than flipping it to -180.
    return np.where((arr > 0) & (wrapped == -180.0), 180.0, wrapped)
