"""``terraloc embed``: geotagged photos → embedding shards (``id, lat, lon, embedding``).

Uses the image backbones of :mod:`terraloc.encoders.image` and the embedding loop of
:func:`terraloc.search.refdb.embed_photos`; a photo that cannot be read is reported and skipped,
the batch goes on.
Shards are written by :class:`~terraloc.train.shards.ShardWriter` (atomic shards, manifest last).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from terraloc.errors import InputError, MissingResourceError
from terraloc.train.shards import ShardWriter


def _image_api() -> Any:
    try:
        return importlib.import_module("terraloc.encoders.image")
    except ImportError:
        raise MissingResourceError(
            "image backbones (terraloc.encoders.image, the predict branch) are not installed in this build; "
            "write shards from precomputed embeddings with terraloc.train.shards.write_shards"
        ) from None


def _rows(photos: Path, id_col: str) -> Iterator[tuple[str, Path, float, float, int]]:
    import numpy as np

    from terraloc.geo.coords import validate_latlon
    from terraloc.table import parse_float_column, read_csv, require_columns

    df = read_csv(photos)
    require_columns(df, ["path", "lat", "lon", id_col], photos)
    lat = parse_float_column(df, "lat", photos).values
    lon = parse_float_column(df, "lon", photos).values
    lines = df["_line"].to_numpy()
    validate_latlon(np.stack([lat, lon], 1), source=str(photos), rows=lines)
    for p, i, a, o, ln in zip(df["path"], df[id_col], lat, lon, lines, strict=True):
        yield str(i), photos.parent / str(p), float(a), float(o), int(ln)


def embed_to_shards(
    photos: Path,
    out: Path,
    backbone: str,
    batch_size: int = 32,
    shard_rows: int = 16384,
    id_col: str = "path",
    workers: int = 2,
    engine: str = "local",
) -> tuple[int, list[str]]:
    """Embed the photos listed in ``photos`` (CSV ``path,lat,lon``) into shards under ``out``.

    Embedding is :func:`terraloc.search.refdb.embed_photos` (the one embedding loop: threaded
    decoding, per-file errors, ``engine`` ``local`` or ``ray``), one shard's rows at a time;
    embeddings are the backbone's L2-normalised ``(N, D)`` float32. The manifest records the
    backbone (``{"id", "hash", "dim"}``), which every checkpoint trained on the shards copies.

    Returns:
        ``(rows written, one message per skipped photo)``.
    """
    api = _image_api()
    from terraloc.search.refdb import embed_photos

    model = api.load_backbone(backbone)
    rows = list(_rows(photos, id_col))
    if not rows:
        raise InputError("no photo rows", path=photos)
    desc = model.describe()
    meta = {
        "backbone": desc,  # copied into every checkpoint trained on these shards
        "embedding_model": desc["id"],
        "weights_hash": desc["hash"],
        "synthetic": False,
    }
    writer = ShardWriter(out, int(model.dim), shard_rows, meta)
    errors: list[str] = []
    n = 0
    for lo in range(0, len(rows), shard_rows):
        chunk = rows[lo : lo + shard_rows]
        emb, ok, errs = embed_photos(
            [str(r[1]) for r in chunk], model, engine=engine, batch_size=batch_size, workers=workers
        )
        for i, msg in sorted(errs.items()):
            errors.append(f"{photos}, line {chunk[i][4]}: {msg}")
        keep = np.flatnonzero(ok)
        if len(keep):
            writer.add([chunk[i][0] for i in keep], np.array([[chunk[i][2], chunk[i][3]] for i in keep]), emb[keep])
            n += len(keep)
    if n == 0:
        raise InputError("no photo could be embedded", path=photos)
    writer.close()
    return n, errors
