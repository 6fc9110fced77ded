"""Reference-photo database (Img2Loc's image–location database) and its kNN consensus head.

On disk (``DIR``):

* ``manifest.json`` — backbone id and weights hash, dimension, row count, the search index spec,
  ``complete: true``; written last, so its presence marks a finished database;
* ``embeddings.npy`` — ``(N, D)`` float32 L2-normalised image embeddings (memory-mapped on load);
* ``indexes/`` — the search index when it is not ``flat`` (any spec of
  :func:`terraloc.search.index.make_index`: ``hierarchical`` or a FAISS factory string such as
  ``IVF1024,Flat`` for a large database), built once and saved, as for GPS galleries;
* ``table.parquet`` — one row per reference photo: ``id, path, lat, lon, city, admin1, country``;
* ``skipped.csv`` — photos that were not included (no GPS, unreadable) and why.

Databases written before ``embeddings.npy`` existed hold ``index.faiss`` (a flat FAISS
inner-product index); they still load, searched through the same :class:`SearchIndex` interface.

This module reads databases (and holds what writing one shares with reading it: the manifest
version, the backbone and index-spec checks, ``skipped.csv``). Databases are built by the engine:
``terraloc db build`` or :func:`terraloc.engine.build_refdb` (local or Ray, resumable part files
under ``DIR/.work/``, final files written atomically).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.io import atomic_write

MANIFEST_VERSION = 1


# --------------------------------------------------------------------------- database


EMBEDDINGS_FILE = "embeddings.npy"
LEGACY_INDEX_FILE = "index.faiss"


class ReferenceDatabase:
    """A built reference database: embeddings + a :class:`~terraloc.search.index.SearchIndex` + Parquet table.

    Attributes:
        table: DataFrame with ``id, path, lat, lon, city, admin1, country``.
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees.
        embeddings: ``(N, D)`` float32 normalised rows (memory-mapped).
        index: the search index over ``embeddings`` (``flat`` unless the manifest or ``load`` says otherwise).
        manifest: ``backbone`` {id, hash, dim}, ``n``, ``index`` {spec, options}, ``complete``, ...
    """

    def __init__(self, path: Path, index: Any, table: pd.DataFrame, manifest: dict, embeddings: Any = None) -> None:
        self.path = path
        self.index = index
        self.table = table
        self.manifest = manifest
        self.embeddings = embeddings
        self.coords = table[["lat", "lon"]].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def load(
        cls, path: str | Path, backbone: Any = None, index: str | None = None, **options: Any
    ) -> ReferenceDatabase:
        """Open a database; with ``backbone`` refuse one built with different weights.

        Args:
            path: the database folder.
            backbone: the query backbone (its ``weights_hash`` and ``dim`` must match the manifest's).
            index: search index spec (default: the one the database was built with, else ``flat``);
                ``options`` go to it (e.g. ``params="nprobe=32"``). Non-flat indexes are built once
                and cached in ``indexes/``.

        Raises:
            MissingResourceError: not a (complete) database.
            InputError: built with another backbone than ``backbone``, or inconsistent files.
        """
        from terraloc.search.index import FaissIndex, cached_index

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
        table = pd.read_parquet(p / "table.parquet")
        stored = manifest.get("index") or {"spec": "flat", "options": {}}
        spec = index or stored["spec"]
        opts = options if index is not None else {**stored.get("options", {}), **options}
        if (p / EMBEDDINGS_FILE).exists():
            emb = np.load(p / EMBEDDINGS_FILE, mmap_mode="r")
            if emb.ndim != 2 or len(emb) != len(table):
                raise InputError(f"embeddings have shape {emb.shape} but the table {len(table)} rows", path=p)
            idx = cached_index(p, emb, spec, **opts)
        else:  # a database from before embeddings.npy: its flat FAISS index holds the vectors
            import faiss

            raw = faiss.read_index(str(p / LEGACY_INDEX_FILE))
            emb = raw.reconstruct_n(0, raw.ntotal) if raw.ntotal else np.zeros((0, raw.d), np.float32)
            idx = FaissIndex("Flat", None, index=raw) if index is None else cached_index(p, emb, spec, **opts)
        if idx.size != len(table):
            raise InputError(f"index has {idx.size} vectors but the table {len(table)} rows", path=p)
        return cls(p, idx, table, manifest, emb)

    def files(self) -> dict[str, str]:
        """The files that define the database's contents (``{role: path}``), for recording their hashes.

        The manifest and the embeddings (``index.faiss`` for databases from before ``embeddings.npy``);
        a non-flat index is derived from the embeddings and not listed.
        """
        data = self.path / EMBEDDINGS_FILE
        if data.exists():
            return {"db_manifest": str(self.path / "manifest.json"), "db_embeddings": str(data)}
        return {"db_manifest": str(self.path / "manifest.json"), "db_index": str(self.path / LEGACY_INDEX_FILE)}

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """k most similar references: ``(Q, D)`` normalised queries → scores, indices ``(Q, k)``.

        An approximate index may find fewer than ``k``: those slots hold ``-inf`` and ``-1``.
        """
        res = self.index.search(np.asarray(queries, dtype=np.float32), min(k, len(self)))
        return res.scores, res.indices

    def farthest(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """k least similar references (Img2Loc's negatives): scores ascending, indices ``(Q, k)``.

        The nearest neighbours of the negated queries, through the same index.
        """
        res = self.index.search(-np.asarray(queries, dtype=np.float32), min(k, len(self)))
        return -res.scores, res.indices


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


#: widths a FAISS factory string is tried at while the embedding width is not known yet
#: (common backbone widths, and 5040, a multiple of every PQ/OPQ sub-quantizer count up to 10)
PROBE_DIMS = (512, 768, 1024, 1280, 5040)


def check_index_spec(spec: str, options: dict[str, Any], dim: int | None = None) -> None:
    """Refuse a bad index spec or option before hours of embedding, not after.

    Args:
        spec: ``flat``, ``hierarchical`` or a FAISS factory string (as :func:`parse_index_spec` returns it).
        options: the spec's options (unknown ones are refused, naming the known ones).
        dim: the embedding width ``D``; ``None`` (not known yet) checks a FAISS factory string at
            :data:`PROBE_DIMS` and accepts it when it builds at one of them.

    Raises:
        InputError: one line naming the spec and FAISS's reason (field ``index``).
    """
    from terraloc.search.hierarchical import BUILD_OPTIONS, SEARCH_OPTIONS
    from terraloc.search.index import FLAT_OPTIONS, FaissIndex, check_options

    if spec == "flat":
        check_options(options, FLAT_OPTIONS, "flat index")
    elif spec == "hierarchical":
        check_options(options, BUILD_OPTIONS | SEARCH_OPTIONS, "hierarchical index")
    else:
        import faiss

        check_options(options, FaissIndex.OPTIONS, f"FAISS index '{spec}'")
        reason = ""
        for d in (dim,) if dim is not None else PROBE_DIMS:
            try:
                faiss.index_factory(int(d), spec, faiss.METRIC_INNER_PRODUCT)
                return
            except RuntimeError as exc:
                reason = reason or _faiss_reason(exc)
        if dim is None:
            raise InputError(f"not a valid FAISS factory string '{spec}': {reason}", field="index")
        raise InputError(f"FAISS index '{spec}' does not fit {dim}-d embeddings: {reason}", field="index")


def _faiss_reason(exc: RuntimeError) -> str:
    """FAISS's message without its C++ location (``Error in ... at index_factory.cpp:1220: ``)."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    elif ".cpp:" in text:
        text = text.split(".cpp:", 1)[1].split(": ", 1)[-1]
    return re.sub(r"^'[^']*' failed: ", "", text.strip())


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
