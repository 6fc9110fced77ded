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

    from terraloc.evaluate.table import parse_float_column, read_csv, require_columns
    from terraloc.geo.coords import validate_latlon

    df = read_csv(photos)
    require_columns(df, ["path", "lat", "lon", id_col], photos)
    lat = parse_float_column(df, "lat", photos).values
    lon = parse_float_column(df, "lon", photos).values
    lines = df["_line"].to_numpy()
    validate_latlon(np.stack([lat, lon], 1), source=str(photos), rows=lines)
    for p, i, a, o, ln in zip(df["path"], df[id_col], lat, lon, lines, strict=True):
        yield str(i), photos.parent / str(p), float(a), float(o), int(ln)


def embed_photos(
    photos: Path, out: Path, backbone: str, batch_size: int = 32, shard_rows: int = 16384, id_col: str = "path"
) -> tuple[int, list[str]]:
    """Embed the photos listed in ``photos`` (CSV ``path,lat,lon``) into shards under ``out``.

    Returns:
        ``(rows written, one message per skipped photo)``.
    """
    api = _image_api()
    model = api.load_backbone(backbone)
    writer: ShardWriter | None = None
    errors: list[str] = []
    n = 0
    batch: list[tuple[str, Any, float, float]] = []

    def flush() -> None:
        nonlocal writer, n
        if not batch:
            return
        emb = model.embed([b[1] for b in batch])
        emb = emb.detach().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb)
        if writer is None:
            writer = ShardWriter(
                out,
                int(emb.shape[1]),
                shard_rows,
                {
                    "embedding_model": getattr(model, "model_id", backbone),
                    "weights_hash": getattr(model, "weights_hash", ""),
                    "synthetic": False,
                },
            )
        writer.add([b[0] for b in batch], np.array([[b[2], b[3]] for b in batch]), emb)
        n += len(batch)
        batch.clear()

    for rid, path, lat, lon, line in _rows(photos, id_col):
        try:
            img = api.load_image(path)
        except Exception as exc:  # per-file errors: report and continue
            errors.append(f"{photos}, line {line}: {path}: {exc}")
            continue
        batch.append((rid, img, lat, lon))
        if len(batch) >= batch_size:
            flush()
    flush()
    if writer is None:
        raise InputError("no photo could be embedded", path=photos)
    writer.close()
    return n, errors
