"""``terraloc embed``: geotagged photos → embedding shards (``id, lat, lon, embedding``).

Uses the image backbones of :mod:`terraloc.encoders.image` (``load_backbone(spec).embed(images)``)
and its ``load_image``; a photo that cannot be read is reported and skipped, the batch goes on.
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


def embed_photos(
    photos: Path,
    out: Path,
    backbone: str,
    batch_size: int = 32,
    shard_rows: int = 16384,
    id_col: str = "path",
    workers: int = 2,
) -> tuple[int, list[str]]:
    """Embed the photos listed in ``photos`` (CSV ``path,lat,lon``) into shards under ``out``.

    Decoding and batching reuse the prediction engine (``iter_pixel_batches``: threaded JPEG
    decoding, per-file errors); embeddings are the backbone's L2-normalised ``(N, D)`` float32.

    Returns:
        ``(rows written, one message per skipped photo)``.
    """
    api = _image_api()
    from terraloc.encoders.image.batching import iter_pixel_batches

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
    writer: ShardWriter | None = None
    errors: list[str] = []
    n = 0
    for batch in iter_pixel_batches([r[1] for r in rows], model.preprocess, batch_size=batch_size, workers=workers):
        for i, msg in sorted(batch.errors.items()):
            errors.append(f"{photos}, line {rows[i][4]}: {msg}")
        if not batch.indices:
            continue
        emb = model.embed_pixels(batch.pixels).numpy()
        if writer is None:
            writer = ShardWriter(out, int(emb.shape[1]), shard_rows, meta)
        sel = [rows[i] for i in batch.indices]
        writer.add([r[0] for r in sel], np.array([[r[2], r[3]] for r in sel]), emb)
        n += len(sel)
    if writer is None:
        raise InputError("no photo could be embedded", path=photos)
    writer.close()
    return n, errors
