"""Reference-database builds on the engine: embed into part files, then assemble the database.

``build_refdb`` runs an embedding job into ``OUT/.work/`` (resumable, local or Ray), then streams
the parts once to build the FAISS index (any factory string; indexes that need training — IVF,
PQ — are trained on a seeded sample of at most ``train_size`` rows first), the Parquet table
(``id, path, lat, lon, city, admin1, country``) and ``skipped.csv``, and writes ``manifest.json``
last. Neither step holds all embeddings in memory except inside the index itself: memory per
reference photo is what the index stores (``Flat``: 4·D bytes; ``IVF…,PQm``: m bytes + 8) plus the
table row (about 100 bytes).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from terraloc.engine.inputs import JobInputs
from terraloc.engine.job import Engine, read_manifest, run_job
from terraloc.engine.progress import ProgressCallback, RunSummary
from terraloc.engine.stream import StreamedItems
from terraloc.engine.workers import EmbedSpec
from terraloc.errors import InputError
from terraloc.io import atomic_write, atomic_write_text
from terraloc.search.refdb import MANIFEST_VERSION, write_skipped

WORK = ".work"


def geotagged_items(
    images: str | Path, *, id_col: str | None = None, lat_col: str | None = None, lon_col: str | None = None
) -> StreamedItems:
    """Geotagged photos: a CSV/Parquet manifest with lat/lon, or a folder/glob of EXIF-geotagged photos,
    kept on disk (:func:`~terraloc.engine.stream.open_work_items`).

    Ids are file stems (as reference-database tables have always used) unless ``id_col`` is given.

    Raises:
        NoPhotosError: nothing usable (carries the skipped list).
    """
    from terraloc.engine.stream import open_work_items

    return open_work_items(images, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=True, stem_ids=True)


def _embeddings(t: pa.Table) -> NDArray[np.float32]:
    col = t.column("embedding").combine_chunks()
    d = col.type.list_size
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)


def build_refdb(
    items: JobInputs,
    backbone: str,
    out: str | Path,
    engine: Engine,
    *,
    index: str = "Flat",
    part_size: int | None = None,
    batch_size: int = 32,
    decode_threads: int = 1,
    places: bool = True,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Build a :class:`~terraloc.search.refdb.ReferenceDatabase` at ``out``; resumable.

    The Python API of ``terraloc db build`` (it replaces ``terraloc.search.refdb.build_database``).

    Args:
        items: geotagged photos (:func:`geotagged_items`); ``items.skipped`` go to ``skipped.csv``.
        backbone: image backbone spec (``load_backbone``: a folder, a model name, ``efficientnet-lite0``).
        out: the database folder; an unfinished build there (``out/.work/``) is resumed.
        engine: :func:`terraloc.engine.make_engine` (``local`` or ``ray``).
        index: ``flat``, ``hierarchical@OPTIONS`` or a FAISS factory string with ``@PARAMS``; refused
            before anything is embedded when it is not valid (unknown options, a factory string FAISS
            cannot parse), and after embedding when it does not fit the embedding width (then the
            embeddings stay in ``out/.work/`` and a run with another ``index`` reuses them).
        places: add ``city, admin1, country`` columns (offline reverse geocoding).
        on_progress: called with a :class:`~terraloc.engine.progress.Progress` (``done``, ``total``,
            photos/s, ETA) as photos finish.

    Returns:
        ``{"n", "skipped" [(path, reason)], "index", "summary" (RunSummary), "seconds"}``.

    Raises:
        InputError: a complete database already at ``out``, a bad ``index``, another job's unfinished
            build at ``out``, or no usable photo (``skipped.csv`` is written first).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if (out / "manifest.json").exists():
        raise InputError("a complete database already exists here (delete the folder to rebuild)", path=out)
    from terraloc.search.index import cached_index
    from terraloc.search.refdb import EMBEDDINGS_FILE, check_index_spec
    from terraloc.search.spec import parse_index_spec as parse

    spec_name, spec_options = parse(index, field="index")
    check_index_spec(spec_name, spec_options)  # before anything is embedded
    skipped: list[tuple[str, str]] = list(items.skipped)
    if len(items) == 0:
        write_skipped(out / "skipped.csv", skipped)
        raise InputError(
            f"no usable photo ({len(skipped)} skipped); skipped list written to {out / 'skipped.csv'}", path=out
        )
    work = out / WORK
    spec = EmbedSpec(backbone, batch_size=batch_size, decode_threads=decode_threads)
    summary: RunSummary = run_job(spec, items, work, engine, part_size=part_size, on_progress=on_progress)
    man = read_manifest(work)
    assert man is not None
    desc = man["model"]["backbone"]
    dim = int(desc["dim"])
    try:
        check_index_spec(spec_name, spec_options, dim)
    except InputError as exc:
        raise InputError(
            f"{exc.problem}; the embeddings are kept in {work}: run again with another --index to use them",
            field="index",
        ) from None
    files = [work / p["file"] for p in man["parts"]]
    rows = [int(p["rows"]) for p in man["parts"]]
    n = sum(rows)
    with open(work / "errors.csv", encoding="utf-8", newline="") as errs:
        for r in csv.DictReader(errs):
            if r["index"]:
                skipped.append((r["path"], r["reason"]))
    if n == 0:
        write_skipped(out / "skipped.csv", skipped)
        raise InputError(f"no photo could be embedded; skipped list written to {out / 'skipped.csv'}", path=out)
    schema = pa.schema([("id", pa.string()), ("path", pa.string()), ("lat", pa.float64()), ("lon", pa.float64())])
    if places:
        schema = schema.append(pa.field("city", pa.string()))
        schema = schema.append(pa.field("admin1", pa.string()))
        schema = schema.append(pa.field("country", pa.string()))
    # embeddings.npy written part by part through a memory map (never all rows in memory at once)
    tmp_emb = out / f".{EMBEDDINGS_FILE}.tmp"
    emb = np.lib.format.open_memmap(tmp_emb, mode="w+", dtype=np.float32, shape=(n, dim))
    pos = 0
    with atomic_write(out / "table.parquet", "wb") as tfh, pq.ParquetWriter(tfh, schema) as writer:
        for f in files:
            t = pq.read_table(f)
            if t.num_rows == 0:
                continue
            emb[pos : pos + t.num_rows] = _embeddings(t)
            pos += t.num_rows
            cols: dict[str, Any] = {c: t.column(c) for c in ("id", "path", "lat", "lon")}
            if places:
                from terraloc.geo.places import reverse_geocode

                pl = reverse_geocode(np.stack([t.column("lat").to_numpy(), t.column("lon").to_numpy()], 1))
                cols["city"] = pa.array([p.city for p in pl], pa.string())
                cols["admin1"] = pa.array([p.admin1 for p in pl], pa.string())
                cols["country"] = pa.array([p.country for p in pl], pa.string())
            writer.write_table(pa.table(cols, schema=schema))
    emb.flush()
    del emb
    tmp_emb.replace(out / EMBEDDINGS_FILE)
    stored = np.load(out / EMBEDDINGS_FILE, mmap_mode="r")
    cached_index(out, stored, spec_name, **spec_options)  # builds and saves a non-flat index
    write_skipped(out / "skipped.csv", skipped)
    manifest = {
        "version": MANIFEST_VERSION,
        "backbone": desc,
        "n": n,
        "skipped": len(skipped),
        "metric": "inner product of L2-normalised float32 embeddings",
        "index": {"spec": spec_name, "options": dict(spec_options)},
        "complete": True,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "skipped": skipped, "index": index, "summary": summary, "seconds": time.perf_counter() - t0}
