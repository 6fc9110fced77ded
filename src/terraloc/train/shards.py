"""Embedding shards: Parquet files of ``id, lat, lon, embedding`` read as a stream.

A shard folder holds ``shard-00000.parquet, ...`` and ``manifest.json``
(``{"format": "terraloc-shards", "version": 1, "dim", "rows", "shards": [{"file", "rows"}], ...}``).
``embedding`` is a fixed-size list of float32 (``dim`` values). Each shard and then the manifest
are written atomically, so a folder is either complete or has no manifest (resumable writers
keep finished shards and continue from the next one).

Reading never loads the whole set: an epoch visits the shards in a seeded order, permutes rows
inside each shard and yields batches of a fixed size (the last partial batch is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.geo.coords import validate_latlon
from terraloc.io import atomic_write, atomic_write_text

SHARD_FORMAT = "terraloc-shards"
SHARD_VERSION = 1
REQUIRED_COLUMNS = ("id", "lat", "lon", "embedding")


@dataclass
class Batch:
    """One batch: ``ids`` (B,) ``str`` objects, ``latlon`` (B, 2) degrees, ``emb`` (B, D) float32 (C order)."""

    ids: NDArray[Any]
    latlon: NDArray[np.float64]
    emb: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.latlon)


def _table(ids: list[str], latlon: NDArray[np.float64], emb: NDArray[np.float32]) -> pa.Table:
    d = emb.shape[1]
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "lat": pa.array(latlon[:, 0], type=pa.float64()),
            "lon": pa.array(latlon[:, 1], type=pa.float64()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    )


@dataclass
class ShardWriter:
    """Accumulate rows and write fixed-size shards atomically; :meth:`close` writes the manifest.

    Args:
        out_dir: the shard folder.
        dim: embedding width.
        shard_rows: rows per shard.
        meta: extra manifest entries (e.g. ``{"synthetic": true, "backbone": {"id", "hash", "dim"}}``).
    """

    out_dir: Path
    dim: int
    shard_rows: int = 16384
    meta: dict[str, Any] = field(default_factory=dict)
    _ids: list[str] = field(default_factory=list)
    _ll: list[NDArray[np.float64]] = field(default_factory=list)
    _emb: list[NDArray[np.float32]] = field(default_factory=list)
    _pending: int = 0
    _shards: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / "manifest.json").exists():
            raise InputError(
                "shard folder already complete (manifest.json exists); choose a new folder", path=self.out_dir
            )

    def add(self, ids: Iterable[str], latlon: NDArray[np.float64], emb: NDArray[np.float32]) -> None:
        """Append rows: ``ids`` (B,), ``latlon`` (B, 2) degrees (validated), ``emb`` (B, dim)."""
        ids = [str(i) for i in ids]
        ll = validate_latlon(latlon, source="embedding rows")
        e = np.asarray(emb, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise InputError(f"embedding has shape {e.shape}, expected (N, {self.dim})", field="embedding")
        if not (len(ids) == len(ll) == len(e)):
            raise InputError(f"ids/latlon/embedding lengths differ ({len(ids)}, {len(ll)}, {len(e)})")
        self._ids.extend(ids)
        self._ll.append(ll)
        self._emb.append(e)
        self._pending += len(ids)
        while self._pending >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        ll = np.concatenate(self._ll)
        emb = np.concatenate(self._emb)
        ids = self._ids
        name = f"shard-{len(self._shards):05d}.parquet"
        with atomic_write(self.out_dir / name, "wb") as fh:
            pq.write_table(_table(ids[:n], ll[:n], emb[:n]), fh, row_group_size=4096)
        self._shards.append({"file": name, "rows": n})
        self._ids, self._ll, self._emb = ids[n:], [ll[n:]], [emb[n:]]
        self._pending -= n

    def close(self) -> dict[str, Any]:
        """Write the last partial shard and the manifest; returns the manifest."""
        if self._pending:
            self._flush(self._pending)
        manifest = {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "dim": self.dim,
            "rows": int(sum(s["rows"] for s in self._shards)),
            "shards": self._shards,
            **self.meta,
        }
        atomic_write_text(self.out_dir / "manifest.json", json.dumps(manifest, indent=1))
        return manifest


def write_shards(
    batches: Iterable[tuple[Iterable[str], NDArray[np.float64], NDArray[np.float32]]],
    out_dir: str | Path,
    dim: int,
    shard_rows: int = 16384,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an iterable of ``(ids, latlon, embeddings)`` batches as a shard folder."""
    w = ShardWriter(Path(out_dir), dim, shard_rows, dict(meta or {}))
    for ids, ll, emb in batches:
        w.add(ids, ll, emb)
    return w.close()


def _take(b: Batch, idx: NDArray[np.intp]) -> Batch:
    return Batch(b.ids[idx], b.latlon[idx], b.emb[idx])


def _concat(a: Batch, b: Batch) -> Batch:
    return Batch(np.concatenate([a.ids, b.ids]), np.concatenate([a.latlon, b.latlon]), np.concatenate([a.emb, b.emb]))


class ShardSet:
    """A validated shard folder, streamed batch by batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise MissingResourceError(f"{self.path}: shard folder not found")
        if not mpath.exists():
            raise InputError("no manifest.json (incomplete or not a shard folder)", path=self.path)
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", path=mpath) from None
        if self.manifest.get("format") != SHARD_FORMAT:
            raise InputError(f"format is {self.manifest.get('format')!r}, expected {SHARD_FORMAT!r}", path=mpath)
        self.dim = int(self.manifest["dim"])
        self.shards = [self.path / s["file"] for s in self.manifest["shards"]]
        self.rows = [int(s["rows"]) for s in self.manifest["shards"]]
        for f in self.shards:
            self._check_schema(f)

    @property
    def backbone(self) -> dict[str, Any] | None:
        """``{"id", "hash", "dim"}`` of the backbone that made these embeddings, or ``None`` if unrecorded.

        Read from the manifest's ``backbone`` entry (or, for folders written before it existed,
        from ``embedding_model`` / ``weights_hash``).
        """
        from terraloc.models.provenance import backbone_record

        rec = self.manifest.get("backbone")
        if rec is None and self.manifest.get("embedding_model"):
            rec = {
                "id": self.manifest["embedding_model"],
                "hash": self.manifest.get("weights_hash", ""),
                "dim": self.dim,
            }
        return backbone_record(rec)

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def _check_schema(self, f: Path) -> None:
        if not f.exists():
            raise MissingResourceError(f"{f}: shard listed in the manifest is missing")
        try:
            schema = pq.read_schema(f)
        except Exception as exc:
            raise InputError(f"not a Parquet file ({exc})", path=f) from None
        for col in REQUIRED_COLUMNS:
            if col not in schema.names:
                raise InputError("missing column", path=f, field=col)
        t = schema.field("embedding").type
        if not pa.types.is_fixed_size_list(t) or t.list_size != self.dim:
            size = getattr(t, "list_size", "variable")
            raise InputError(
                f"embedding width {size} does not match the manifest's dim {self.dim}", path=f, field="embedding"
            )

    def read_shard(self, i: int) -> Batch:
        """All rows of shard ``i`` (validated coordinates).

        The embedding column is copied once, chunk by chunk (zero-copy views of Arrow's float32
        buffers), into one C-contiguous float32 array; ids stay an object array of ``str``.
        """
        f = self.shards[i]
        t = pq.read_table(f, columns=list(REQUIRED_COLUMNS))
        lat = t.column("lat").to_numpy()
        lon = t.column("lon").to_numpy()
        ll = validate_latlon(np.stack([lat, lon], 1), source=str(f), rows=np.arange(len(lat)) + 1)
        emb = np.empty((t.num_rows, self.dim), dtype=np.float32)
        at = 0
        for chunk in t.column("embedding").chunks:
            n = len(chunk)
            if n == 0:
                continue
            flat = chunk.flatten().to_numpy(zero_copy_only=False)  # honours the chunk's offset
            emb[at : at + n] = flat.reshape(n, self.dim)
            at += n
        ids = t.column("id").to_numpy(zero_copy_only=False)
        return Batch(ids, ll, emb)

    def coords(self) -> NDArray[np.float64]:
        """All ``(N, 2)`` coordinates (small: 16 bytes a row), read column-wise."""
        out = []
        for f in self.shards:
            t = pq.read_table(f, columns=["lat", "lon"])
            ll = np.stack([t.column("lat").to_numpy(), t.column("lon").to_numpy()], 1)
            out.append(validate_latlon(ll, source=str(f), rows=np.arange(len(ll)) + 1))
        return np.concatenate(out)

    def batches(
        self, batch_size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, drop_last: bool = True
    ) -> Iterator[Batch]:
        """Yield batches for one epoch; the order depends only on ``(seed, epoch)``."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        # Rows left over from previous shards (fewer than one batch), already in epoch order.
        rest: Batch | None = None
        for si in order:
            b = self.read_shard(int(si))
            perm = rng.permutation(len(b)) if shuffle else np.arange(len(b))
            # Each batch is gathered straight from the shard (one copy of its rows), not by
            # permuting and then concatenating the whole shard; the order is the same.
            pos = 0
            if rest is not None:
                need = batch_size - len(rest)
                if len(b) < need:
                    take = perm
                    rest = _concat(rest, _take(b, take))
                    continue
                take = perm[:need]
                yield _concat(rest, _take(b, take))
                rest, pos = None, need
            n_full = pos + ((len(b) - pos) // batch_size) * batch_size
            for s in range(pos, n_full, batch_size):
                yield _take(b, perm[s : s + batch_size])
            if n_full < len(b):
                rest = _take(b, perm[n_full:])
        if rest is not None and len(rest) and not drop_last:
            yield rest

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n_rows // batch_size
