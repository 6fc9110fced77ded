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
        raise InputError(
            "the Ray engine is terraloc.engine (terraloc db build --engine ray; engine.refdb_build.build_refdb)",
            field="engine",
        )
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


def _check_index_spec(spec: str, options: dict[str, Any], dim: int) -> None:
    """Refuse a bad index spec or option before hours of embedding, not after."""
    from terraloc.search.hierarchical import BUILD_OPTIONS, SEARCH_OPTIONS
    from terraloc.search.index import FLAT_OPTIONS, FaissIndex, check_options

    if spec == "flat":
        check_options(options, FLAT_OPTIONS, "flat index")
    elif spec == "hierarchical":
        check_options(options, BUILD_OPTIONS | SEARCH_OPTIONS, "hierarchical index")
    else:
        import faiss

        check_options(options, FaissIndex.OPTIONS, f"FAISS index '{spec}'")
        try:
            faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
            raise InputError(f"not a valid FAISS factory string: {msg}", field="index") from None


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
    progress: Callable[[int, int], None] | bool | None = True,
    places: bool = True,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    index: str = "flat",
    index_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed geotagged photos into a :class:`ReferenceDatabase` at ``out``; resumable.

    ``images`` is anything :func:`terraloc.inputs.read_photo_inputs` reads (a manifest with
    coordinates, or a folder/glob of EXIF-geotagged photos). ``out/skipped.csv`` lists what was
    left out, also when nothing was usable (then the error says so and suggests a manifest).

    ``progress``: a ``(done, total)`` callback for the embedding, or ``True`` (default) to report
    it to :mod:`terraloc.progress` (the front end's bar), ``False``/``None`` for silence. ``index``
    (with ``index_options``) is the search index the database is searched with by default: ``flat``
    (exact), ``hierarchical`` or a FAISS factory string (``IVF1024,Flat`` with
    ``{"params": "nprobe=16"}``); a non-flat index is built here and saved under ``indexes/``.

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
    _check_index_spec(index, index_options or {}, int(backbone.dim))
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
        if callable(progress):
            progress(done, len(photos))
        elif progress:
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
    if progress and not callable(progress):
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
    emb = np.ascontiguousarray(emb[ok], dtype=np.float32)
    with atomic_write(out / EMBEDDINGS_FILE, "wb") as fh:
        np.save(fh, emb)
    from terraloc.search.index import cached_index

    cached_index(out, emb, index, **(index_options or {}))  # validates the spec; saves a non-flat index
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
        "index": {"spec": index, "options": dict(index_options or {})},
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
