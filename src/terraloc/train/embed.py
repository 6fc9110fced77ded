"""``terraloc embed``: geotagged photos → embedding shards (``id, lat, lon, embedding``).

Uses the image backbones of :mod:`terraloc.encoders.image` and the embedding loop of
:func:`terraloc.search.refdb.embed_photos` (the one loop, engines ``local`` and ``ray``); a photo
that cannot be read is reported and skipped, the batch goes on. Shards are written by
:class:`~terraloc.train.shards.ShardWriter` (atomic shards, manifest last).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
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


def embed_to_shards(
    photos: str | Path | Sequence[str | Path],
    out: Path,
    backbone: str,
    batch_size: int = 32,
    shard_rows: int = 16384,
    id_col: str | None = None,
    workers: int = 2,
    lat_col: str | None = None,
    lon_col: str | None = None,
    engine: str = "local",
) -> tuple[int, list[str]]:
    """Embed geotagged photos into shards under ``out``.

    ``photos`` is anything :func:`terraloc.inputs.read_photo_inputs` reads with coordinates: a
    CSV/Parquet manifest (``path,lat,lon``, ``IMG_ID,LAT,LON``, ... columns detected
    case-insensitively, paths relative to the manifest) or a folder/glob of EXIF-geotagged photos.
    Embedding is :func:`terraloc.search.refdb.embed_photos` (threaded decoding, per-file errors,
    ``engine`` ``local`` or ``ray``), one shard's rows at a time; embeddings are the backbone's
    L2-normalised ``(N, D)`` float32. Shard ids are the manifest's id column (``id_col``; default the
    path as written) or file stems. The manifest records the backbone (``{"id", "hash", "dim"}``),
    which every checkpoint trained on the shards copies.

    Returns:
        ``(rows written, one message per skipped photo)``.
    """
    from terraloc.inputs import read_photo_inputs
    from terraloc.search.refdb import embed_photos

    api = _image_api()
    inp = read_photo_inputs(photos, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=True)
    assert inp.coords is not None
    errors: list[str] = [f"{item}: {reason}" for item, reason in inp.skipped]
    model = api.load_backbone(backbone)
    desc = model.describe()
    meta = {
        "backbone": desc,  # copied into every checkpoint trained on these shards
        "embedding_model": desc["id"],
        "weights_hash": desc["hash"],
        "synthetic": False,
    }
    where = [f"{inp.source}, line {ln}" for ln in inp.lines] if inp.lines is not None else list(inp.paths)
    writer = ShardWriter(out, int(model.dim), shard_rows, meta)
    n = 0
    for lo in range(0, len(inp.paths), shard_rows):
        paths = [str(p) for p in inp.paths[lo : lo + shard_rows]]
        emb, ok, errs = embed_photos(paths, model, engine=engine, batch_size=batch_size, workers=workers)
        for i, msg in sorted(errs.items()):
            errors.append(f"{where[lo + i]}: {msg}")
        keep = np.flatnonzero(ok)
        if len(keep):
            writer.add([inp.ids[lo + i] for i in keep], inp.coords[lo + keep], emb[keep])
            n += len(keep)
    if n == 0:
        raise InputError("no photo could be embedded", path=inp.source)
    writer.close()
    return n, errors
