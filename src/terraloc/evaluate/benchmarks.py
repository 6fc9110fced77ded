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
from terraloc.evaluate.ids import image_key


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
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    name: str | None = None,
) -> GroundTruth:
    """Load ground truth from any CSV/Parquet manifest (read by :func:`terraloc.inputs.read_manifest`).

    Columns are matched case-insensitively and detected when not given (id/path from ``image``,
    ``path``, ``IMG_ID``, ...; ``lat``/``latitude``; ``lon``/``lng``/``longitude``). The photos
    need not exist; ids are kept as written.

    Raises:
        InputError: missing columns, non-numeric or out-of-range coordinates, empty or
            duplicate ids, or no rows; the message names the file, line and field.
    """
    from terraloc.inputs import read_manifest

    path = Path(path)
    inp = read_manifest(path, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=True, check_files=False)
    assert inp.coords is not None
    return GroundTruth(name=name or path.stem, ids=inp.ids, coords=inp.coords, path=path)


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


def load_truth(
    benchmark: str | None = None,
    ground_truth: str | Path | None = None,
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
) -> GroundTruth:
    """Ground truth from exactly one of a named ``benchmark`` or a ``ground_truth`` file (columns detected)."""
    if (benchmark is None) == (ground_truth is None):
        raise InputError("give exactly one of --benchmark NAME or --ground-truth FILE")
    if benchmark is not None:
        return load_benchmark(benchmark)
    assert ground_truth is not None
    return load_ground_truth_csv(ground_truth, id_col=id_col, lat_col=lat_col, lon_col=lon_col)
