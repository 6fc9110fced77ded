"""The Equal Earth projection with GeoCLIP's scaling.

GeoCLIP projects ``(lat, lon)`` with Equal Earth (Šavrič et al., 2018) and scales by
``SF / 180`` so the world fits roughly in ``[-1, 1]`` before its random Fourier features.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

A1 = 1.340264
A2 = -0.081106
A3 = 0.000893
A4 = 0.003796
SF = 66.50336


def equal_earth(latlon: ArrayLike) -> NDArray[np.float64]:
    """Project ``(N, 2)`` degrees to ``(N, 2)`` GeoCLIP-scaled Equal Earth ``(x, y)``."""
    rad = np.radians(np.asarray(latlon, dtype=np.float64))
    lat, lon = rad[..., 0], rad[..., 1]
    theta = np.arcsin(np.sqrt(3.0) / 2 * np.sin(lat))
    denom = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = 2 * np.sqrt(3.0) * lon * np.cos(theta) / denom
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return np.stack([x, y], axis=-1) * SF / 180.0
