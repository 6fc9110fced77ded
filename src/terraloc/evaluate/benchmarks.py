"""Ground-truth readers for the standard benchmarks, in their real formats.

| name       | file (under ``data/benchmarks``) | id column | coordinates          | rows   |
|------------|----------------------------------|-----------|----------------------|--------|
| im2gps3k   | im2gps3k_places365.csv           | IMG_ID    | LAT, LON             | 2,997  |
| im2gps     | im2gps_places365.csv             | IMG_ID    | LAT, LON             | 237    |
| yfcc4k     | yfcc4k.csv (Flickr export)       | name      | lon before lat       | 4,536  |
| yfcc26k    | yfcc25600_places365.csv          | IMG_ID (folder-prefixed) | LAT, LON  | 25,600 |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from terraloc.config import shared_path
from terraloc.errors import InputError
from terraloc.evaluate.ids import check_unique_ids, image_key
from terraloc.geo.coords import validate_latlon
from terraloc.table import parse_float_column, read_csv, require_columns


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's ground truth lives and which columns hold what."""

    file: str
    id_col: str
    lat_col: str
    lon_col: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "im2gps3k": BenchmarkSpec("im2gps3k_places365.csv", "IMG_ID", "LAT", "LON"),
    "im2gps": BenchmarkSpec("im2gps_places365.csv", "IMG_ID", "LAT", "LON"),
    "yfcc4k": BenchmarkSpec("yfcc4k.csv", "name", "lat", "lon"),
    "yfcc26k": BenchmarkSpec("yfcc25600_places365.csv", "IMG_ID", "LAT", "LON"),
}


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one benchmark.

    Attributes:
        name: benchmark name (or the file name for a custom CSV).
        ids: ``(N,)`` image ids as written in the file.
        coords: ``(N, 2)`` ``(lat, lon)`` degrees.
        path: the file read.
    """

    name: str
    ids: list[str]
    coords: NDArray[np.float64]
    path: Path
    keys: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", [image_key(i) for i in self.ids])

    def __len__(self) -> int:
        return len(self.ids)


def load_ground_truth_csv(
    path: str | Path,
    *,
    id_col: str,
    lat_col: str,
    lon_col: str,
    name: str | None = None,
) -> GroundTruth:
    """Load ground truth from any CSV given its column names.

    Raises:
        InputError: missing columns, non-numeric or out-of-range coordinates, empty or
            duplicate ids, or no rows; the message names the file, line and field.
    """
    path = Path(path)
    df = read_csv(path, file_names=True)
    require_columns(df, [id_col, lat_col, lon_col], path)
    # Blank lines inside the file become rows of empty cells: drop them, keeping line numbers.
    cells = df[[id_col, lat_col, lon_col]].apply(lambda c: c.str.strip())
    df = df[(cells != "").any(axis=1)]
    if len(df) == 0:
        raise InputError("no data rows", path=path)
    lat = parse_float_column(df, lat_col, path).values
    lon = parse_float_column(df, lon_col, path).values
    lines = df["_line"].to_numpy()
    coords = validate_latlon(np.stack([lat, lon], axis=1), source=str(path), rows=lines)
    ids = df[id_col].str.strip().tolist()
    check_unique_ids(ids, lines, path, id_col, "image id")
    return GroundTruth(name=name or path.stem, ids=ids, coords=coords, path=path)


def load_benchmark(name: str) -> GroundTruth:
    """Load a named benchmark's ground truth from the shared data folder.

    Args:
        name: one of :data:`BENCHMARKS` (``im2gps3k``, ``im2gps``, ``yfcc4k``, ``yfcc26k``).
    """
    key = name.lower()
    if key not in BENCHMARKS:
        raise InputError(f"unknown benchmark '{name}'; choose one of {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[key]
    path = shared_path("data", "benchmarks", spec.file)
    return load_ground_truth_csv(path, id_col=spec.id_col, lat_col=spec.lat_col, lon_col=spec.lon_col, name=key)
