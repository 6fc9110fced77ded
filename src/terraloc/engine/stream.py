"""Photo inputs kept on disk: a CSV/Parquet manifest read in chunks, never whole, by the driver.

:func:`open_work_items` reads a manifest ``CHUNK_ROWS`` rows at a time through the one manifest
reader (:func:`terraloc.inputs.manifest_rows`: the same columns, checks and messages), writes each
chunk's ids, paths and coordinates to an Arrow file in a temporary folder and hashes them as it
goes. What stays in the driver is O(chunk) plus 16 bytes a photo (a 64-bit key of each id and its
line, to refuse a duplicate id across chunks) and the skipped rows. A partition's inputs are read
back from that file when it is handed out (:meth:`StreamedItems.part`), so the driver's memory
does not grow with the number of photos the way a list of every path does.

Folders, globs and lists of paths are read by :func:`terraloc.engine.inputs.read_work_items`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from terraloc.engine.inputs import WorkItems, read_work_items
from terraloc.errors import InputError

#: Manifest rows read (and kept) at a time.
CHUNK_ROWS = 2048

_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("lat", pa.float64()), ("lon", pa.float64())])


class StreamedItems:
    """Photo inputs in an on-disk Arrow file (see the module docstring); the interface of
    :class:`~terraloc.engine.inputs.WorkItems` that :func:`~terraloc.engine.job.run_job` uses.

    Attributes:
        skipped: ``(item, reason)`` for manifest rows that named no usable photo.
        has_coords: whether the manifest has coordinate columns (``(lat, lon)`` per photo).
    """

    def __init__(self, file: Path, n: int, has_coords: bool, digest: str, skipped: list[tuple[str, str]]) -> None:
        self.file = file
        self.n = n
        self.has_coords = has_coords
        self._digest = digest
        self.skipped = skipped

    def __len__(self) -> int:
        return self.n

    def digest(self) -> str:
        """SHA-256 (16 hex) of ids, paths and coordinates in order — as :meth:`WorkItems.digest`."""
        return self._digest

    def part(self, lo: int, hi: int) -> tuple[list[str], list[str], NDArray[np.float64] | None]:
        """Ids, paths and ``(hi - lo, 2)`` coordinates (or ``None``) of inputs ``[lo, hi)``."""
        with pa.OSFile(str(self.file), "rb") as fh:  # plain reads: a memory map would stay resident
            reader = pa.ipc.open_file(fh)
            batches = []
            start = 0
            for k in range(reader.num_record_batches):
                b = reader.get_batch(k)
                end = start + b.num_rows
                if end > lo and start < hi:
                    batches.append(b.slice(max(0, lo - start), min(hi, end) - max(lo, start)))
                start = end
                if start >= hi:
                    break
        t = pa.Table.from_batches(batches, schema=_SCHEMA)
        coords = None
        if self.has_coords:
            coords = np.stack([t.column("lat").to_numpy(), t.column("lon").to_numpy()], axis=1).astype(np.float64)
        return t.column("id").to_pylist(), t.column("path").to_pylist(), coords


def _csv_chunks(path: Path) -> Iterator[Any]:
    """The CSV as string DataFrames of ``CHUNK_ROWS`` rows with their ``_line`` (as ``table.read_csv``)."""
    import csv

    import pandas as pd

    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)
    start = 2
    try:
        reader = pd.read_csv(
            path,
            dtype=object,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding_errors="surrogateescape",
            chunksize=CHUNK_ROWS,
        )
        for df in reader:
            df["_line"] = np.arange(len(df)) + start
            start += len(df)
            yield df
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", path=path) from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise InputError(f"malformed CSV: {str(exc).strip().splitlines()[-1]}", path=path) from None


def _parquet_chunks(path: Path) -> Iterator[Any]:
    """The Parquet file as string DataFrames of ``CHUNK_ROWS`` rows (as ``inputs._read_table``)."""
    import pyarrow.parquet as pq

    start = 2
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS)
        for b in batches:
            df = b.to_pandas()
            df = df.astype(str).where(df.notna(), "")
            df["_line"] = np.arange(len(df)) + start
            start += len(df)
            yield df
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read Parquet file ({type(exc).__name__}: {exc})", path=path) from None


def _key64(ids: Sequence[str]) -> NDArray[np.uint64]:
    from terraloc.evaluate.ids import image_key

    def key(i: str) -> int:
        digest = hashlib.blake2b(image_key(i).encode("utf-8", "surrogateescape"), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    return np.array([key(i) for i in ids], dtype=np.uint64)


class _SeenIds:
    """64-bit keys of the ids seen so far with their lines: a repeat across chunks is refused.

    Kept as a few sorted runs whose sizes halve (merged like a binary counter), so adding a chunk
    costs O(chunk · log N) lookups and each key is merged O(log N) times.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[NDArray[np.uint64], NDArray[np.int64]]] = []

    def add(self, ids: list[str], lines: list[int], path: Path, field: str) -> None:
        keys = _key64(ids)
        for run_keys, run_lines in self.runs:
            if not len(run_keys):
                continue
            pos = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = run_keys[pos] == keys
            if hit.any():
                j = int(np.flatnonzero(hit)[0])
                why = f"duplicate image id '{ids[j]}' (first on line {int(run_lines[pos[j]])})"
                raise InputError(why, path=path, row=lines[j], field=field)
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], np.asarray(lines, dtype=np.int64)[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, l1), (k2, l2) = self.runs[-2], self.runs.pop()
            k, ln = np.concatenate([k1, k2]), np.concatenate([l1, l2])
            order = np.argsort(k, kind="stable")
            self.runs[-1] = (k[order], ln[order])


def _row_ids(df: Any, columns: dict[str, str]) -> tuple[list[str], list[int]]:
    """Ids and lines of a chunk's non-blank rows (as ``manifest_rows`` sees them)."""
    used = list(dict.fromkeys(columns.values()))
    cells = df[used].apply(lambda c: c.str.strip())
    keep = (cells != "").any(axis=1)
    return cells[columns["id"]][keep].tolist(), [int(x) for x in df["_line"][keep]]


def open_work_items(
    spec: str | Path | Sequence[str | Path],
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    require_coords: bool = False,
) -> WorkItems | StreamedItems:
    """Photo inputs for a job: one CSV/Parquet manifest streamed to disk (:class:`StreamedItems`),
    anything else read into memory (:func:`~terraloc.engine.inputs.read_work_items`).

    Raises:
        InputError: as :func:`read_work_items` (malformed manifest, duplicate ids, nothing usable).
    """
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    p = Path(specs[0]) if len(specs) == 1 else None
    kw: dict[str, Any] = {"id_col": id_col, "lat_col": lat_col, "lon_col": lon_col, "require_coords": require_coords}
    if p is None or not p.is_file() or p.suffix.lower() not in (".csv", ".parquet", ".pq"):
        return read_work_items(spec, **kw)
    streamed = _stream_manifest(p, **kw)
    return read_work_items(spec, **kw) if streamed is None else streamed


def _stream_manifest(path: Path, **kw: Any) -> StreamedItems | None:
    """Stream ``path`` into a temporary Arrow file; ``None`` when it has no rows at all (the
    in-memory reader then gives its message)."""
    import pyarrow.ipc as ipc

    from terraloc.inputs import NoPhotosError, PhotoInputs, manifest_rows

    folder = Path(tempfile.mkdtemp(prefix="terraloc-inputs-"))
    file = folder / "inputs.arrow"
    h = hashlib.sha256()
    seen = _SeenIds()
    skipped: list[tuple[str, str]] = []
    n = 0
    chunks = 0
    has_coords: bool | None = None
    columns: dict[str, str] = {}
    try:
        with pa.OSFile(str(file), "wb") as sink, ipc.new_file(sink, _SCHEMA) as writer:
            source = _parquet_chunks(path) if path.suffix.lower() in (".parquet", ".pq") else _csv_chunks(path)
            for df in source:
                chunks += 1
                if columns:  # every row's id (kept or not), checked against earlier chunks first
                    seen.add(*_row_ids(df, columns), path, columns["id"])
                pi = manifest_rows(df, path, empty_ok=True, **kw)
                skipped.extend(pi.skipped)
                if not pi.columns:  # a chunk of blank lines
                    continue
                if not columns:
                    columns = dict(pi.columns)
                    seen.add(*_row_ids(df, columns), path, columns["id"])
                if has_coords is None:
                    has_coords = pi.coords is not None
                ids = [str(i) for i in pi.ids]
                for i, q in zip(ids, pi.paths, strict=True):
                    h.update(i.encode())
                    h.update(b"\0")
                    h.update(q.encode())
                    h.update(b"\n")
                m = len(ids)
                c = pi.coords if pi.coords is not None else np.full((m, 2), np.nan)
                c = np.asarray(c, dtype=np.float64).reshape(-1, 2)
                writer.write_batch(
                    pa.record_batch(
                        [
                            pa.array(ids, pa.string()),
                            pa.array(pi.paths, pa.string()),
                            pa.array(c[:, 0]),
                            pa.array(c[:, 1]),
                        ],
                        schema=_SCHEMA,
                    )
                )
                n += m
        if chunks == 0 or has_coords is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        if n == 0:
            summary = PhotoInputs([], [], None, skipped).skip_summary()
            raise NoPhotosError(f"no usable photos ({summary})", path=str(path), skipped=skipped, hint=None)
        if has_coords:  # the coordinates after all ids and paths, as WorkItems.digest
            with pa.OSFile(str(file), "rb") as fh:
                reader = ipc.open_file(fh)
                for k in range(reader.num_record_batches):
                    b = reader.get_batch(k)
                    lat, lon = b.column(2).to_numpy(), b.column(3).to_numpy()
                    h.update(np.ascontiguousarray(np.stack([lat, lon], axis=1), dtype=np.float64).tobytes())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    items = StreamedItems(file, n, bool(has_coords), h.hexdigest()[:16], skipped)
    weakref.finalize(items, shutil.rmtree, folder, True)
    return items
