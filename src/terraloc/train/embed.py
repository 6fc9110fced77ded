"""``terraloc embed``: geotagged photos → embedding shards (``id, lat, lon, embedding``).

Uses the image backbones of :mod:`terraloc.encoders.image` (``load_backbone(spec).embed(images)``)
and its ``load_image``; a photo that cannot be read is reported and skipped, the batch goes on.
Shards are written by :class:`~terraloc.train.shards.ShardWriter` (atomic shards, manifest last).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def embed_photos(
    photos: str | Path | Sequence[str | Path],
    out: Path,
    backbone: str,
    batch_size: int = 32,
    shard_rows: int = 16384,
    id_col: str | None = None,
    workers: int = 2,
    lat_col: str | None = None,
    lon_col: str | None = None,
) -> tuple[int, list[str]]:
    """Embed geotagged photos into shards under ``out``.

    ``photos`` is anything :func:`terraloc.inputs.read_photo_inputs` reads with coordinates: a
    CSV/Parquet manifest (``path,lat,lon``, ``IMG_ID,LAT,LON``, ... columns detected
    case-insensitively, paths relative to the manifest) or a folder/glob of EXIF-geotagged photos.
    Decoding and batching reuse the prediction engine (``iter_pixel_batches``: threaded JPEG
    decoding, per-file errors); embeddings are the backbone's L2-normalised ``(N, D)`` float32.
    Shard ids are the manifest's id column (``id_col``; default the path as written) or file stems.

    Returns:
        ``(rows written, one message per skipped photo)``.
    """
    from terraloc.inputs import read_photo_inputs

    api = _image_api()
    from terraloc.encoders.image.batching import iter_pixel_batches

    inp = read_photo_inputs(photos, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=True)
    assert inp.coords is not None
    errors: list[str] = [f"{item}: {reason}" for item, reason in inp.skipped]
    model = api.load_backbone(backbone)
    meta = {
        "embedding_model": getattr(model, "model_id", backbone),
        "weights_hash": getattr(model, "weights_hash", ""),
        "synthetic": False,
    }
    where = [f"{inp.source}, line {ln}" for ln in inp.lines] if inp.lines is not None else list(inp.paths)
    writer: ShardWriter | None = None
    n = 0
    for batch in iter_pixel_batches(inp.paths, model.preprocess, batch_size=batch_size, workers=workers):
        for i, msg in sorted(batch.errors.items()):
            errors.append(f"{where[i]}: {msg}")
        if not batch.indices:
            continue
        emb = model.embed_pixels(batch.pixels).numpy()
        if writer is None:
            writer = ShardWriter(out, int(emb.shape[1]), shard_rows, meta)
        idx = list(batch.indices)
        writer.add([inp.ids[i] for i in idx], inp.coords[idx], emb)
        n += len(idx)
    if writer is None:
        raise InputError("no photo could be embedded", path=inp.source)
    writer.close()
    return n, errors
