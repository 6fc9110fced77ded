"""Part files: one Parquet file of rows and one of errors per partition, written atomically.

Layout of a job folder ``OUT``::

    OUT/job.json                  what the run is (written first; see terraloc.engine.plan)
    OUT/parts/part-00000.parquet  rows of partition 0 (embeddings or predictions)
    OUT/errors/part-00000.parquet photos of partition 0 that failed: index, id, path, reason
    OUT/errors.csv                every failure in input order (written at the end)
    OUT/manifest.json             written last: the parts, row counts, totals ("complete": true)

The errors file of a partition is written before its rows file, and the rows file marks the
partition as finished, so a finished partition always has both. Writing a part again (a retried
worker, a resumed run) replaces it with the same content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from terraloc.io import atomic_write

PARTS_DIR = "parts"
ERRORS_DIR = "errors"
MODEL_META_KEY = b"terraloc.model"

ERROR_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("id", pa.string()),
        ("path", pa.string()),
        ("reason", pa.string()),
    ]
)


def part_name(pid: int) -> str:
    """File name of partition ``pid``'s part (``part-00042.parquet``)."""
    return f"part-{pid:05d}.parquet"


def rows_path(out: str | Path, pid: int) -> Path:
    return Path(out) / PARTS_DIR / part_name(pid)


def errors_path(out: str | Path, pid: int) -> Path:
    return Path(out) / ERRORS_DIR / part_name(pid)


def is_done(out: str | Path, pid: int) -> bool:
    """A partition is finished when its rows file exists (its errors file was written before)."""
    return rows_path(out, pid).exists()


@dataclass
class ErrorRow:
    """One failed photo: ``index`` in the input order, its id and path, and the one-line reason."""

    index: int
    id: str
    path: str
    reason: str


def errors_table(errors: list[ErrorRow]) -> pa.Table:
    return pa.table(
        {
            "index": pa.array([e.index for e in errors], pa.int64()),
            "id": pa.array([e.id for e in errors], pa.string()),
            "path": pa.array([e.path for e in errors], pa.string()),
            "reason": pa.array([e.reason for e in errors], pa.string()),
        },
        schema=ERROR_SCHEMA,
    )


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically (a reader never sees half a file)."""
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh, row_group_size=8192)


def write_part(out: str | Path, pid: int, rows: pa.Table, errors: list[ErrorRow], model: dict[str, Any]) -> None:
    """Write partition ``pid``: its errors, then its rows (with ``model`` in the schema metadata)."""
    write_parquet(errors_path(out, pid), errors_table(errors))
    meta = dict(rows.schema.metadata or {})
    meta[MODEL_META_KEY] = json.dumps(model).encode()
    write_parquet(rows_path(out, pid), rows.replace_schema_metadata(meta))


def read_model_meta(path: Path) -> dict[str, Any]:
    """The model description a worker stored in a part's schema metadata."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(MODEL_META_KEY)
    return json.loads(raw) if raw else {}


def remove_stale_temporaries(out: str | Path) -> int:
    """Delete half-written temporary files a killed run left in the part folders; returns how many."""
    n = 0
    for sub in (PARTS_DIR, ERRORS_DIR):
        d = Path(out) / sub
        if d.is_dir():
            for f in d.glob(".part-*.tmp"):
                f.unlink(missing_ok=True)
                n += 1
    return n
