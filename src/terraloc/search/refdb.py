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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError

# --------------------------------------------------------------------------- inputs


@dataclass
class GeoPhoto:
    """A reference photo: id (file stem or CSV id), path, and its ``(lat, lon)`` degrees."""

    id: str
    path: str
    lat: float
    lon: float


def exif_gps(path: str | Path) -> tuple[float, float] | None:
    """``(lat, lon)`` degrees from a photo's EXIF GPS tags, or ``None`` when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            gps = img.getexif().get_ifd(0x8825)
    except Exception:
        return None
    if not gps or 2 not in gps or 4 not in gps:
        return None

    def deg(v: Any) -> float:
        d, m, s = (float(x) for x in v)
        return d + m / 60.0 + s / 3600.0

    try:
        lat, lon = deg(gps[2]), deg(gps[4])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        lon = -lon
    if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def _pick(cols: list[str], options: Sequence[str]) -> str | None:
    low = {c.lower(): c for c in cols}
    for o in options:
        if o in low:
            return low[o]
    return None


def read_geotagged(source: str | Path) -> tuple[list[GeoPhoto], list[tuple[str, str]]]:
    """Geotagged photos from a CSV (path/id + lat/lon columns) or a folder (EXIF GPS).

    CSV columns (case-insensitive): a path column (``path``, ``image``, ``file``, ``filename``,
    ``img_id``), ``lat``/``latitude`` and ``lon``/``lng``/``longitude``; relative paths are resolved
    against the CSV's folder. Returns ``(photos, skipped)`` where ``skipped`` lists
    ``(path, reason)`` for rows/photos without usable coordinates or files.
    """
    from terraloc.encoders.image.loading import find_images

    src = Path(source)
    photos: list[GeoPhoto] = []
    skipped: list[tuple[str, str]] = []
    if src.is_dir():
        for p in find_images(src):
            ll = exif_gps(p)
            if ll is None:
                skipped.append((str(p), "no EXIF GPS position"))
            else:
                photos.append(GeoPhoto(p.stem, str(p), ll[0], ll[1]))
        return photos, skipped
    if not src.exists():
        raise InputError("no such file or folder", path=src)
    try:
        df = pd.read_csv(src, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"cannot read CSV: {exc}", path=src) from None
    cols = list(df.columns)
    pcol = _pick(cols, ["path", "image", "file", "filename", "img_id", "image_id", "id"])
    latc = _pick(cols, ["lat", "latitude"])
    lonc = _pick(cols, ["lon", "lng", "long", "longitude"])
    for name, c in (("path", pcol), ("lat", latc), ("lon", lonc)):
        if c is None:
            raise InputError(f"CSV needs a {name} column; found {', '.join(cols)}", path=src, field=name)
    assert pcol and latc and lonc
    for i, row in enumerate(df.itertuples(index=False), start=2):
        rec = dict(zip(cols, row, strict=True))
        rel = rec[pcol].strip()
        p = Path(rel) if Path(rel).is_absolute() else src.parent / rel
        try:
            lat, lon = float(rec[latc]), float(rec[lonc])
        except ValueError:
            skipped.append((str(p), f"line {i}: lat/lon not numbers"))
            continue
        if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            skipped.append((str(p), f"line {i}: lat/lon out of range"))
            continue
        if not p.is_file():
            skipped.append((str(p), f"line {i}: file not found"))
            continue
        photos.append(GeoPhoto(Path(rel).stem, str(p), lat, lon))
    return photos, skipped


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
