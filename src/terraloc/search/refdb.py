"""Reference-photo database (Img2Loc's image–location database) and its kNN consensus head.

On disk (``DIR``):

* ``manifest.json`` — backbone id and weights hash, dimension, row count, ``complete: true``;
  written last, so its presence marks a finished database;
* ``index.faiss`` — a FAISS inner-product index over L2-normalised float32 embeddings;
* ``table.parquet`` — one row per reference photo: ``id, path, lat, lon, city, admin1, country``;
* ``skipped.csv`` — photos that were not included (no GPS, unreadable) and why.

Building goes through ``DIR/.work/`` shards (``shard-NNNNN.npz``), so an interrupted build resumes
where it stopped; the final files are written atomically.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.inputs import NoPhotosError
from terraloc.inputs import exif_gps as exif_gps  # re-exported: it used to live here
from terraloc.io import atomic_write, atomic_write_text

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


# --------------------------------------------------------------------------- embedding loop


def embed_photos(
    paths: Sequence[str],
    backbone: Any,
    *,
    engine: str = "local",
    batch_size: int = 16,
    workers: int = 2,
    on_batch: Callable[[list[int], NDArray[np.float32], dict[int, str]], None] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], dict[int, str]]:
    """Embed image files with ``backbone``: returns ``(embeddings (N, D) float32 normalised, ok (N,), errors)``.

    Rows whose image failed are zero and ``ok`` is False; ``errors`` maps their index to a message.
    ``engine="local"`` decodes in ``workers`` threads and runs the backbone in this process; other
    engines (e.g. ``"ray"``) are registered by other modules in :data:`ENGINES`.
    ``on_batch(indices, embeddings, errors)`` is called after every batch (for progress / shards).
    """
    if engine == "ray" and "ray" not in ENGINES:
        from terraloc.search.ray_engine import embed_ray

        ENGINES["ray"] = embed_ray
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; known: {', '.join(ENGINES)}", field="engine")
    return ENGINES[engine](paths, backbone, batch_size=batch_size, workers=workers, on_batch=on_batch)


def _embed_local(
    paths: Sequence[str],
    backbone: Any,
    *,
    batch_size: int,
    workers: int,
    on_batch: Callable[[list[int], NDArray[np.float32], dict[int, str]], None] | None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], dict[int, str]]:
    from terraloc.encoders.image.batching import iter_pixel_batches

    n = len(paths)
    emb = np.zeros((n, backbone.dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    for b in iter_pixel_batches(paths, backbone.preprocess, batch_size=batch_size, workers=workers):
        errors.update(b.errors)
        vec = np.zeros((0, backbone.dim), dtype=np.float32)
        if b.indices:
            vec = backbone.embed_pixels(b.pixels).numpy().astype(np.float32)
            emb[b.indices] = vec
            ok[b.indices] = True
        if on_batch is not None:
            on_batch(b.indices, vec, b.errors)
    return emb, ok, errors


ENGINES: dict[str, Callable[..., tuple[NDArray[np.float32], NDArray[np.bool_], dict[int, str]]]] = {
    "local": _embed_local,
}


# --------------------------------------------------------------------------- database


def _flat_index(emb: NDArray[np.float32]) -> Any:
    import faiss

    index = faiss.IndexFlatIP(emb.shape[1])
    if len(emb):
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index


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


def build_database(
    images: str | Path | Sequence[str | Path],
    backbone: Any,
    out: str | Path,
    *,
    shard_size: int = 256,
    batch_size: int = 16,
    workers: int = 2,
    engine: str = "local",
    progress: bool = True,
    places: bool = True,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
) -> dict[str, Any]:
    """Embed geotagged photos into a :class:`ReferenceDatabase` at ``out``; resumable.

    ``images`` is anything :func:`terraloc.inputs.read_photo_inputs` reads (a manifest with
    coordinates, or a folder/glob of EXIF-geotagged photos). ``out/skipped.csv`` lists what was
    left out, also when nothing was usable (then the error says so and suggests a manifest).

    Returns a summary: ``n`` included, ``skipped`` list, ``resumed_shards``, ``seconds``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    man_path = out / "manifest.json"
    desc = {"id": backbone.model_id, "hash": backbone.weights_hash, "dim": backbone.dim}
    if man_path.exists():
        manifest = json.loads(man_path.read_text())
        check_backbone(manifest, backbone, out)
        raise InputError("a complete database already exists here (delete the folder to rebuild)", path=out)
    try:
        photos, skipped = read_geotagged(images, id_col=id_col, lat_col=lat_col, lon_col=lon_col)
    except NoPhotosError as exc:
        write_skipped(out / "skipped.csv", exc.skipped)
        raise InputError(f"{exc.problem}; skipped list written to {out / 'skipped.csv'}", path=exc.path) from None
    source = (
        str(Path(images).resolve())
        if isinstance(images, str | Path)
        else ",".join(str(Path(i).resolve()) for i in images)
    )
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    job = {"backbone": desc, "source": source, "n": len(photos), "shard_size": shard_size}
    job_path = work / "job.json"
    if job_path.exists():
        prev = json.loads(job_path.read_text())
        if prev.get("backbone") != desc:
            raise InputError(
                f"an unfinished build here used backbone '{prev.get('backbone', {}).get('id')}'; "
                "resume with that backbone or delete the folder",
                path=out,
                field="backbone",
            )
        if prev != job:
            raise InputError("an unfinished build here used other input photos; delete the folder", path=out)
    else:
        atomic_write_text(job_path, json.dumps(job))
    n_shards = (len(photos) + shard_size - 1) // shard_size
    resumed = 0
    from terraloc.progress import report

    what = "embedding reference photos"
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            report(what, done, len(photos))

    for s in range(n_shards):
        shard_path = work / f"shard-{s:05d}.npz"
        lo, hi = s * shard_size, min(len(photos), (s + 1) * shard_size)
        if shard_path.exists():
            resumed += 1
            advance(hi - lo)
            continue
        paths = [p.path for p in photos[lo:hi]]
        emb, ok, errors = embed_photos(
            paths,
            backbone,
            engine=engine,
            batch_size=batch_size,
            workers=workers,
            on_batch=lambda idx, v, e: advance(len(idx) + len(e)),
        )
        err_arr = np.array([errors.get(i, "") for i in range(hi - lo)], dtype=object).astype(str)
        with atomic_write(shard_path, "wb") as fh:
            np.savez(fh, emb=emb, ok=ok, errors=err_arr)
    if progress:
        from terraloc.progress import finish

        finish(what)
    # Assemble
    embs, oks, errs = [], [], []
    for s in range(n_shards):
        with np.load(work / f"shard-{s:05d}.npz") as z:
            embs.append(z["emb"])
            oks.append(z["ok"])
            errs.append(z["errors"])
    emb = np.concatenate(embs) if embs else np.zeros((0, backbone.dim), np.float32)
    ok = np.concatenate(oks) if oks else np.zeros(0, bool)
    err = np.concatenate(errs) if errs else np.zeros(0, str)
    for i in np.flatnonzero(~ok):
        skipped.append((photos[i].path, str(err[i]) or "failed"))
    keep = [p for p, good in zip(photos, ok, strict=True) if good]
    if not keep:
        write_skipped(out / "skipped.csv", skipped)
        raise InputError(f"no photo could be embedded; skipped list written to {out / 'skipped.csv'}", path=source)
    table = pd.DataFrame(
        {
            "id": [p.id for p in keep],
            "path": [p.path for p in keep],
            "lat": np.array([p.lat for p in keep], dtype=np.float64),
            "lon": np.array([p.lon for p in keep], dtype=np.float64),
        }
    )
    if places:
        from terraloc.geo.places import reverse_geocode

        pl = reverse_geocode(table[["lat", "lon"]].to_numpy())
        table["city"] = [p.city for p in pl]
        table["admin1"] = [p.admin1 for p in pl]
        table["country"] = [p.country for p in pl]
    emb = emb[ok]
    import faiss

    index = _flat_index(emb)
    tmp_index = out / ".index.faiss.tmp"
    faiss.write_index(index, str(tmp_index))
    tmp_index.replace(out / "index.faiss")
    with atomic_write(out / "table.parquet", "wb") as fh:
        table.to_parquet(fh, index=False)
    write_skipped(out / "skipped.csv", skipped)
    manifest = {
        "version": MANIFEST_VERSION,
        "backbone": desc,
        "n": len(table),
        "skipped": len(skipped),
        "source": source,
        "metric": "inner product of L2-normalised float32 embeddings",
        "complete": True,
    }
    atomic_write_text(man_path, json.dumps(manifest, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return {"n": len(table), "skipped": skipped, "resumed_shards": resumed, "seconds": time.perf_counter() - t0}


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
