"""Reference-photo database (Img2Loc's image–location database) and its kNN consensus head.

On disk (``DIR``):

* ``manifest.json`` — backbone id and weights hash, dimension, row count, ``complete: true``;
  written last, so its presence marks a finished database;
* ``index.faiss`` — a FAISS inner-product index over L2-normalised float32 embeddings;
* ``table.parquet`` — one row per reference photo: ``id, path, lat, lon, city, admin1, country``;
* ``skipped.csv`` — photos that were not included (no GPS, unreadable) and why.

Databases are built by :func:`terraloc.engine.refdb_build.build_refdb` (local or Ray engine,
resumable through ``DIR/.work/`` part files; any FAISS factory string); the final files are
written atomically.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.inputs import exif_gps as exif_gps  # re-exported: it used to live here
from terraloc.io import atomic_write

MANIFEST_VERSION = 1


# --------------------------------------------------------------------------- inputs


@dataclass
class GeoPhoto:
    """A reference photo: id (file stem or CSV id), path, and its ``(lat, lon)`` degrees."""

    id: str
    path: str
    lat: float
    lon: float


def read_geotagged(
    source: str | Path | Sequence[str | Path],
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
) -> tuple[list[GeoPhoto], list[tuple[str, str]]]:
    """Geotagged photos from a manifest (path/id + lat/lon columns), a folder or glob (EXIF GPS).

    Reads through :func:`terraloc.inputs.read_photo_inputs` (``require_coords=True``): manifest
    columns are detected case-insensitively (``IMG_ID,LAT,LON``, ``path,lat,lon`` ...), relative
    paths resolve against the manifest's folder. Returns ``(photos, skipped)`` where ``skipped``
    lists ``(path, reason)`` for files not used (no GPS, missing, not an image).

    Raises:
        InputError: a malformed manifest; ``NoPhotosError`` (carrying the skipped list and a hint)
            when nothing usable is left.
    """
    from terraloc.inputs import read_photo_inputs

    inp = read_photo_inputs(source, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=True)
    assert inp.coords is not None
    photos = [
        GeoPhoto(Path(i).stem, p, float(ll[0]), float(ll[1]))
        for i, p, ll in zip(inp.ids, inp.paths, inp.coords, strict=True)
    ]
    return photos, list(inp.skipped)


# --------------------------------------------------------------------------- database


class ReferenceDatabase:
    """A built reference database: FAISS inner-product index + Parquet table + manifest.

    Attributes:
        table: DataFrame with ``id, path, lat, lon, city, admin1, country``.
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees.
        manifest: ``backbone`` {id, hash, dim}, ``n``, ``complete``, ...
    """

    def __init__(self, path: Path, index: Any, table: pd.DataFrame, manifest: dict) -> None:
        self.path = path
        self.index = index
        self.table = table
        self.manifest = manifest
        self.coords = table[["lat", "lon"]].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def load(cls, path: str | Path, backbone: Any = None) -> ReferenceDatabase:
        """Open a database; with ``backbone`` refuse one built with different weights.

        Raises:
            MissingResourceError: not a (complete) database.
            InputError: built with another backbone than ``backbone``.
        """
        import faiss

        p = Path(path)
        man_path = p / "manifest.json"
        if not man_path.exists():
            hint = " (an unfinished build: re-run `terraloc db build` to resume)" if (p / ".work").exists() else ""
            raise MissingResourceError(f"{p}: not a terraloc reference database (no manifest.json){hint}")
        try:
            manifest = json.loads(man_path.read_text())
        except ValueError as exc:
            raise InputError(f"corrupt manifest: {exc}", path=man_path) from None
        if backbone is not None:
            check_backbone(manifest, backbone, p)
        index = faiss.read_index(str(p / "index.faiss"))
        if manifest.get("search_params"):
            faiss.ParameterSpace().set_index_parameters(index, str(manifest["search_params"]))  # type: ignore[arg-type]
        table = pd.read_parquet(p / "table.parquet")
        if index.ntotal != len(table):
            raise InputError(f"index has {index.ntotal} vectors but the table {len(table)} rows", path=p)
        return cls(p, index, table, manifest)

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """k most similar references: ``(Q, D)`` normalised queries → scores, indices ``(Q, k)``."""
        k = min(k, len(self))
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, idx = self.index.search(q, k)
        return scores, idx.astype(np.int64)

    def farthest(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """k least similar references (Img2Loc's negatives): scores ascending, indices ``(Q, k)``."""
        k = min(k, len(self))
        q = np.ascontiguousarray(-np.asarray(queries, dtype=np.float32))
        scores, idx = self.index.search(q, k)
        return -scores, idx.astype(np.int64)


def check_backbone(manifest: dict, backbone: Any, path: Path) -> None:
    """Refuse a database whose backbone id/hash differ from ``backbone``'s."""
    want = manifest.get("backbone", {})
    if want.get("hash") != backbone.weights_hash or want.get("dim") != backbone.dim:
        raise InputError(
            f"database was built with backbone '{want.get('id')}' (weights {want.get('hash')}, "
            f"{want.get('dim')}-d) but the query backbone is '{backbone.model_id}' "
            f"(weights {backbone.weights_hash}, {backbone.dim}-d); rebuild it or use --backbone {want.get('id')}",
            path=path,
            field="backbone",
        )


def write_skipped(path: str | Path, skipped: Sequence[tuple[str, str]]) -> None:
    """Write ``(path, reason)`` rows to a CSV atomically (header ``path,reason``)."""
    with atomic_write(path, "w") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        w.writerows(skipped)


# --------------------------------------------------------------------------- head


@dataclass(frozen=True)
class ConsensusConfig:
    """kNN consensus settings: ``k`` neighbours, softmax ``temperature`` on cosine similarity,
    neighbours within ``radius_km`` of a cluster seed vote for the same place."""

    k: int = 16
    temperature: float = 0.05
    radius_km: float = 100.0


def knn_consensus(
    coords: NDArray[np.float64], sims: NDArray[np.float32], cfg: ConsensusConfig, top_k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Similarity-weighted spherical consensus of one query's neighbours.

    Neighbours (``coords (k, 2)``, cosine ``sims (k,)``) get weights ``softmax(sims / T)``. Greedily,
    the most similar unassigned neighbour seeds a cluster of all unassigned neighbours within
    ``radius_km``; each cluster's location is the weighted spherical mean of its members and its
    probability the sum of their weights. Returns the ``top_k`` clusters, most probable first:
    ``(m, 2)`` locations and ``(m,)`` probabilities (``m <= top_k``).
    """
    from terraloc.geo import haversine_km, spherical_mean

    w = np.exp((sims - sims.max()) / cfg.temperature)
    w = w / w.sum()
    order = np.argsort(-sims, kind="stable")
    assigned = np.zeros(len(sims), dtype=bool)
    locs, probs = [], []
    for seed in order:
        if assigned[seed]:
            continue
        d = haversine_km(np.repeat(coords[seed][None], len(coords), 0), coords)
        members = (~assigned) & (d <= cfg.radius_km)
        assigned |= members
        locs.append(spherical_mean(coords[members], weights=w[members]))
        probs.append(float(w[members].sum()))
    p = np.array(probs)
    top = np.argsort(-p, kind="stable")[:top_k]
    return np.asarray(locs, dtype=np.float64)[top].reshape(-1, 2), p[top]
