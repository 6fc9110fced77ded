"""Distinct places: a top-k list that names k different places.

Candidates are walked best first; one within ``radius_km`` of an already kept (better) place is
merged into the nearest such place (its probability is added there, its coordinates dropped).
The kept places stay in the order of their best member, so the first answer is always the
head's own first candidate. ``radius_km = 0`` returns the list unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from terraloc.geo import pairwise_haversine_km

DEFAULT_RADIUS_KM = 25.0


def merge_distinct(
    coords: ArrayLike, probs: ArrayLike, radius_km: float = DEFAULT_RADIUS_KM, top_k: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Merge one image's candidates into distinct places.

    Args:
        coords: ``(k, 2)`` (lat, lon) degrees, best first.
        probs: ``(k,)`` probabilities.
        radius_km: merge radius in km; ``0`` (or less) keeps the raw list.
        top_k: keep at most this many places (``None`` = all).

    Returns:
        ``(m, 2)`` coordinates, ``(m,)`` summed probabilities and ``(m,)`` number of merged
        candidates per place, ``m <= k``.
    """
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if radius_km <= 0 or len(xy) == 0:
        m = len(xy) if top_k is None else min(top_k, len(xy))
        return xy[:m].copy(), p[:m].copy(), np.ones(m, dtype=np.int64)
    d = pairwise_haversine_km(xy, xy)
    kept: list[int] = []
    mass: list[float] = []
    count: list[int] = []
    for i in range(len(xy)):
        if kept:
            dk = d[i, kept]
            j = int(np.argmin(dk))
            if dk[j] <= radius_km:
                mass[j] += float(p[i])
                count[j] += 1
                continue
        kept.append(i)
        mass.append(float(p[i]))
        count.append(1)
    m = len(kept) if top_k is None else min(top_k, len(kept))
    return xy[kept[:m]].copy(), np.asarray(mass[:m]), np.asarray(count[:m], dtype=np.int64)
