"""Photo inputs kept on disk: every input kind read in chunks, never listed whole, by the driver.

:func:`open_work_items` reads what :func:`terraloc.inputs.read_photo_inputs` reads — a folder
(walked one folder's entries at a time, :func:`terraloc.inputs.walk_folder`), a glob (its
matches sorted on disk, in runs), an image file, a CSV/TSV/Parquet manifest (``CHUNK_ROWS`` rows
at a time through :func:`terraloc.inputs.manifest_rows`) or a list of these — and appends the
photos' ids, paths and coordinates to an Arrow file in a temporary folder, ``CHUNK_ROWS`` rows a
batch. The photos, their order, ids, coordinates and skipped items are those of
``read_photo_inputs`` plus the engine's id rule (see :func:`open_work_items`).

What stays in the driver is O(chunk) plus 16-byte keys of the strings that must be unique (ids;
for a glob or a list also the paths, to drop repeats; a manifest's ids with their lines, to
refuse a duplicate across chunks), the skipped items, and one row-count per batch. Passes that
need every id (a repeated id, the file stems of a database) read the file back batch by batch.
A partition's inputs are read back when it is handed out (:meth:`StreamedItems.part`).
"""

from __future__ import annotations

import glob as globmod
import hashlib
import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from numpy.typing import NDArray

from terraloc.engine.disksort import from_bytes, sorted_on_disk, to_bytes
from terraloc.engine.inputs import WorkItems
from terraloc.engine.keyset import KeySet
from terraloc.errors import InputError
from terraloc.inputs import InputOptions, PhotoInputs

#: Rows read, written and kept at a time.
CHUNK_ROWS = 2048

# ids and paths as UTF-8 bytes with surrogateescape: file names need not be UTF-8
_SCHEMA = pa.schema([("id", pa.binary()), ("path", pa.binary()), ("lat", pa.float64()), ("lon", pa.float64())])


class StreamedItems:
    """Photo inputs in an on-disk Arrow file (see the module docstring); the interface of
    :class:`~terraloc.engine.inputs.WorkItems` that :func:`~terraloc.engine.job.run_job` uses.

    Attributes:
        skipped: ``(item, reason)`` for inputs that named no usable photo.
        has_coords: whether every photo has ``(lat, lon)``.
    """

    def __init__(
        self, file: Path, starts: NDArray[np.int64], has_coords: bool, digest: str, skipped: list[tuple[str, str]]
    ) -> None:
        self.file = file
        self.starts = starts  # first row of each record batch, then the row count
        self.n = int(starts[-1])
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
        batches = []
        with pa.OSFile(str(self.file), "rb") as fh:  # plain reads: a memory map would stay resident
            reader = ipc.open_file(fh)
            k = max(0, int(np.searchsorted(self.starts, lo, side="right")) - 1)
            while k < reader.num_record_batches and self.starts[k] < hi:
                start, end = int(self.starts[k]), int(self.starts[k + 1])
                a, b = max(lo, start), min(hi, end)
                if b > a:
                    batches.append(reader.get_batch(k).slice(a - start, b - a))
                k += 1
        t = pa.Table.from_batches(batches, schema=_SCHEMA)
        coords = None
        if self.has_coords:
            coords = np.stack([t.column("lat").to_numpy(), t.column("lon").to_numpy()], axis=1).astype(np.float64)
        return from_bytes(t.column("id")), from_bytes(t.column("path")), coords

    def to_work_items(self) -> WorkItems:
        """Every input in memory (for small inputs: tests, benchmarks)."""
        ids, paths, coords = self.part(0, self.n)
        return WorkItems(ids, paths, coords, list(self.skipped))


def _batches(file: Path) -> Iterator[pa.RecordBatch]:
    with pa.OSFile(str(file), "rb") as fh:
        reader = ipc.open_file(fh)
        for k in range(reader.num_record_batches):
            yield reader.get_batch(k)


# --------------------------------------------------------------------------- repeats


def _first_repeat(file: Path, texts: Callable[[pa.RecordBatch], list[str]]) -> str | None:
    """The first of ``texts(batch)`` over the file's batches that repeats an earlier one, or ``None``."""
    keys = KeySet()
    for b in _batches(file):
        t = texts(b)
        seen, _ = keys.add(t)
        if seen.any():
            return t[int(np.flatnonzero(seen)[0])]
    return None


# --------------------------------------------------------------------------- one input item in chunks


@dataclass
class _Item:
    """What one input item gave besides its photos."""

    source: str
    kind: str = ""  # as terraloc.inputs.input_kind
    skipped: list[tuple[str, str]] = field(default_factory=list)  # in order
    no_gps: list[tuple[str, str]] = field(default_factory=list)  # after the listing's (as read_photo_inputs)
    hint_folder: Path | None = None


def _file_chunks(
    listing: Iterable[Any], info: _Item, require_coords: bool, folder: Path, *, repeats: bool
) -> Iterator[PhotoInputs]:
    """Photos of a folder walk / glob listing, ``CHUNK_ROWS`` files at a time; with ``repeats``
    a file or skipped item listed again is dropped (a glob's folder and its files both match)."""
    from terraloc.inputs import photo_files

    keys = KeySet() if repeats else None
    skips: set[tuple[str, str]] = set()

    def chunk(files: list[Path]) -> PhotoInputs:
        if keys is not None:
            seen, _ = keys.add([str(f) for f in files])
            files = [f for f, s in zip(files, seen, strict=True) if not s]
        found = photo_files(files, require_coords)
        if found.skipped:
            info.no_gps.extend(found.skipped)
            info.hint_folder = folder
        return found

    buf: list[Path] = []
    for item, reason in listing:
        if reason is None:
            buf.append(item)
            if len(buf) >= CHUNK_ROWS:
                yield chunk(buf)
                buf = []
        elif not (repeats and (item, reason) in skips):
            if repeats:
                skips.add((item, reason))
            info.skipped.append((item, reason))
    if buf:
        yield chunk(buf)


def _table_chunks(path: Path) -> Iterator[Any]:
    """A manifest as string DataFrames of ``CHUNK_ROWS`` rows with their ``_line`` (as
    ``inputs._read_table`` reads it whole: same cells, same messages)."""
    import csv

    import pandas as pd

    start = 2

    def lined(df: Any) -> Any:
        nonlocal start
        df["_line"] = np.arange(len(df)) + start
        start += len(df)
        return df

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            # pandas reads a whole integer column holding a null as floats ("1.0"): so must every chunk
            ints = [f.name for f in pf.schema_arrow if pa.types.is_integer(f.type)]
            floats: set[str] = set()
            for b in pf.iter_batches(batch_size=CHUNK_ROWS, columns=ints) if ints else ():
                floats |= {name for name, c in zip(b.schema.names, b.columns, strict=True) if c.null_count}
            for b in pf.iter_batches(batch_size=CHUNK_ROWS):
                for name in floats:
                    k = b.schema.get_field_index(name)
                    b = b.set_column(k, name, b.column(k).cast(pa.float64()))
                df = b.to_pandas()
                yield lined(df.astype(str).where(df.notna(), ""))
        except Exception as exc:
            raise InputError(f"cannot read Parquet file ({type(exc).__name__}: {exc})", path=path) from None
        return
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)
    opts: dict[str, Any] = {"keep_default_na": False, "skip_blank_lines": False, "chunksize": CHUNK_ROWS}
    if suffix == ".tsv":
        try:
            for df in pd.read_csv(path, sep="\t", dtype=str, **opts):
                yield lined(df)
        except Exception as exc:
            raise InputError(f"malformed TSV: {str(exc).strip().splitlines()[-1]}", path=path) from None
        return
    try:
        for df in pd.read_csv(path, dtype=object, encoding_errors="surrogateescape", **opts):
            yield lined(df)
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", path=path) from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise InputError(f"malformed CSV: {str(exc).strip().splitlines()[-1]}", path=path) from None


def _row_ids(df: Any, columns: dict[str, str]) -> tuple[list[str], list[int]]:
    """Ids and lines of a chunk's non-blank rows (as ``manifest_rows`` sees them)."""
    used = list(dict.fromkeys(columns.values()))
    cells = df[used].apply(lambda c: c.str.strip())
    keep = (cells != "").any(axis=1)
    return cells[columns["id"]][keep].tolist(), [int(x) for x in df["_line"][keep]]


def _manifest_chunks(path: Path, info: _Item, options: InputOptions) -> Iterator[PhotoInputs]:
    """A manifest's rows through :func:`terraloc.inputs.manifest_rows`, a chunk at a time; an id
    repeated across chunks is refused with the message of the whole-file check."""
    from terraloc.evaluate.ids import image_key
    from terraloc.inputs import manifest_rows, read_manifest

    seen = KeySet()
    columns: dict[str, str] = {}

    def check(df: Any) -> None:  # every row's id (kept or not) against earlier chunks
        ids, lines = _row_ids(df, columns)
        hit, first = seen.add([image_key(i) for i in ids], lines, within=False)
        if hit.any():
            j = int(np.flatnonzero(hit)[0])
            why = f"duplicate image id '{ids[j]}' (first on line {int(first[j])})"
            raise InputError(why, path=path, row=lines[j], field=columns["id"])

    for df in _table_chunks(path):
        if columns:
            check(df)
        pi = manifest_rows(df, path, empty_ok=True, **options)
        info.skipped.extend(pi.skipped)
        if not pi.columns:  # a chunk of blank lines
            continue
        if not columns:
            columns = dict(pi.columns)
            check(df)
        yield pi
    if not columns:  # no rows at all: the whole-file reader gives its message
        yield read_manifest(path, **options)


def _item_chunks(item: str, options: InputOptions, info: _Item, tmp: Path, *, strict: bool) -> Iterator[PhotoInputs]:
    """One input item's photos in chunks, as ``read_photo_inputs`` reads the item."""
    from terraloc.inputs import glob_base, glob_listing, input_kind, walk_folder

    require_coords = options.get("require_coords", False)
    kind = info.kind = input_kind(item, strict=strict)
    p = Path(item)
    if kind == "glob":
        matches = sorted_on_disk(globmod.iglob(item, recursive=True), tmp)
        first = next(matches, None)
        if first is None:
            raise InputError("pattern matches no files", path=item)
        listing = glob_listing(itertools.chain([first], matches))
        yield from _file_chunks(listing, info, require_coords, glob_base(item), repeats=True)
    elif kind == "folder":
        yield from _file_chunks(walk_folder(p), info, require_coords, p, repeats=False)
    elif kind == "manifest":
        info.source = str(p)
        yield from _manifest_chunks(p, info, options)
    elif kind == "missing":
        info.skipped.append((item, "file not found"))
    else:
        yield from _file_chunks([(p, None)], info, require_coords, p.parent, repeats=False)


# --------------------------------------------------------------------------- the inputs


@dataclass
class _Read:
    """What the whole input gave besides its photos."""

    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hint_folders: list[Path] = field(default_factory=list)
    coords: bool = True  # every item with photos carried coordinates
    unique_ids: bool = False  # one manifest: its ids were checked (image keys unique, so ids too)


def _chunks(specs: list[str], options: InputOptions, read: _Read, tmp: Path) -> Iterator[PhotoInputs]:
    """Every photo of ``specs`` in order, as ``read_photo_inputs`` gives them (in a list, a photo
    named again by the same absolute path is dropped: the first wins)."""
    keys = KeySet() if len(specs) > 1 else None
    for item in specs:
        info = _Item(item)
        for c in _item_chunks(item, options, info, tmp, strict=keys is None):
            if not c.paths:
                continue
            read.coords &= c.coords is not None
            read.unique_ids = keys is None and info.kind == "manifest"
            if keys is not None:
                seen, _ = keys.add([os.path.normpath(os.path.abspath(q)) for q in c.paths])
                keep = np.flatnonzero(~seen)
                c = PhotoInputs([c.paths[i] for i in keep], [c.ids[i] for i in keep], _rows(c.coords, keep))
            yield c
        read.skipped.extend(info.skipped + info.no_gps)
        if info.hint_folder is not None:
            read.hint_folders.append(info.hint_folder)
        if keys is None:
            read.source = info.source


def _rows(coords: NDArray[np.float64] | None, keep: NDArray[np.int64]) -> NDArray[np.float64] | None:
    return None if coords is None else coords[keep]


def _write(chunks: Iterable[PhotoInputs], file: Path, read: _Read) -> tuple[list[int], str | None]:
    """Append the photos to ``file`` in batches of ``CHUNK_ROWS``; returns the batch row counts and
    the first id that repeats an earlier one (or ``None``; not looked for when ``read.unique_ids``)."""
    ids: list[str] = []
    paths: list[str] = []
    coords: list[NDArray[np.float64]] = []
    counts: list[int] = []
    keys = KeySet()
    repeat: str | None = None
    with pa.OSFile(str(file), "wb") as sink, ipc.new_file(sink, _SCHEMA) as writer:

        def flush() -> None:
            nonlocal repeat
            if repeat is None and not read.unique_ids:
                seen, _ = keys.add(ids)
                if seen.any():
                    repeat = ids[int(np.flatnonzero(seen)[0])]
            c = np.concatenate(coords)
            cols = [pa.array(to_bytes(ids), pa.binary()), pa.array(to_bytes(paths), pa.binary())]
            writer.write_batch(pa.record_batch([*cols, pa.array(c[:, 0]), pa.array(c[:, 1])], schema=_SCHEMA))
            counts.append(len(ids))
            ids.clear()
            paths.clear()
            coords.clear()

        for c in chunks:
            m = len(c.paths)
            cc = np.full((m, 2), np.nan) if c.coords is None else np.asarray(c.coords, np.float64).reshape(-1, 2)
            pos = 0
            while pos < m:
                take = min(m - pos, CHUNK_ROWS - len(ids))
                ids.extend(str(i) for i in c.ids[pos : pos + take])
                paths.extend(c.paths[pos : pos + take])
                coords.append(cc[pos : pos + take])
                pos += take
                if len(ids) >= CHUNK_ROWS:
                    flush()
        if ids:
            flush()
    return counts, repeat


def _duplicate(dup: str) -> InputError:
    return InputError(f"duplicate photo id '{dup}' (give distinct ids with --id-col)", field="id")


def _rewrite_ids(file: Path, column: str, stems: bool) -> Path:
    """A copy of ``file`` whose ids are its ``column`` (``"id"`` or ``"path"``), or their file stems."""
    out = file.with_name(file.stem + "-ids.arrow")
    with pa.OSFile(str(out), "wb") as sink, ipc.new_file(sink, _SCHEMA) as writer:
        for b in _batches(file):
            ids = from_bytes(b.column(column))
            if stems:
                ids = [Path(i).stem for i in ids]
            writer.write_batch(b.set_column(0, "id", pa.array(to_bytes(ids), pa.binary())))
    file.unlink()
    return out


def _digest(file: Path, has_coords: bool) -> str:
    """SHA-256 (16 hex) of ids, paths, then coordinates, as :meth:`WorkItems.digest`."""
    h = hashlib.sha256()
    for b in _batches(file):
        for i, q in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True):
            h.update(i)
            h.update(b"\0")
            h.update(q)
            h.update(b"\n")
    if has_coords:
        for b in _batches(file):
            lat, lon = b.column(2).to_numpy(), b.column(3).to_numpy()
            h.update(np.ascontiguousarray(np.stack([lat, lon], axis=1), dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def open_work_items(
    spec: str | Path | Sequence[str | Path], *, stem_ids: bool = False, **options: Unpack[InputOptions]
) -> StreamedItems:
    """Photo inputs for a job, kept on disk (:class:`StreamedItems`): the photos, ids, coordinates
    and skipped items of :func:`terraloc.inputs.read_photo_inputs` (same options, same order), with
    the engine's id rule: when ids repeat and no ``id_col`` is given (file names alike in several
    folders), the paths are the ids. With ``stem_ids`` (reference databases) and no ``id_col``, the
    ids' file stems are the ids when they are unique.

    Raises:
        InputError: as ``read_photo_inputs`` (nothing usable, a malformed manifest), and ids that
            still repeat.
    """
    specs = [str(spec)] if isinstance(spec, str | Path) else [str(s) for s in spec]
    if not specs:
        raise InputError("no photo inputs given")
    folder = Path(tempfile.mkdtemp(prefix="terraloc-inputs-"))
    try:
        items = _open(specs, folder, options, stem_ids)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(items, shutil.rmtree, folder, True)
    return items


def _open(specs: list[str], folder: Path, options: InputOptions, stem_ids: bool) -> StreamedItems:
    from terraloc.inputs import manifest_hint, no_photos

    read = _Read(", ".join(specs))
    file = folder / "inputs.arrow"
    counts, repeat = _write(_chunks(specs, options, read, folder), file, read)
    if not sum(counts):
        hint = next((h for h in map(manifest_hint, read.hint_folders) if h), None)
        raise no_photos(PhotoInputs([], [], None, read.skipped, source=read.source, hint=hint))
    no_id_col = options.get("id_col") is None
    column = "id"
    if repeat is not None:
        if not no_id_col:
            raise _duplicate(repeat)
        column = "path"  # same file names in several folders: the paths are the ids
        again = _first_repeat(file, lambda b: from_bytes(b.column("path")))
        if again is not None:
            raise _duplicate(again)
    stems = stem_ids and no_id_col
    stems = stems and _first_repeat(file, lambda b: [Path(i).stem for i in from_bytes(b.column(column))]) is None
    if column != "id" or stems:
        file = _rewrite_ids(file, column, stems)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return StreamedItems(file, starts, read.coords, _digest(file, read.coords), read.skipped)
