"""``sorted()`` of more strings than should be held at once: sorted runs on disk, merged.

A glob's matches are sorted this way (:mod:`terraloc.engine.stream`): ``read_photo_inputs``
sorts them all in memory, and the engine must give the same order.
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

#: Strings sorted in memory at a time (then written as a sorted run and merged).
SORT_RUN_ROWS = 65536
#: Sorted runs merged at once (open files).
MERGE_FAN_IN = 64
#: Strings read back from a run at a time while merging.
BLOCK_ROWS = 256


def to_bytes(texts: Iterable[str]) -> list[bytes]:
    """UTF-8 with ``surrogateescape``: file names that are not UTF-8 survive the round trip."""
    return [t.encode("utf-8", "surrogateescape") for t in texts]


def from_bytes(col: pa.Array) -> list[str]:
    """The strings of a binary Arrow column written from :func:`to_bytes`."""
    return [b.decode("utf-8", "surrogateescape") for b in col.to_pylist()]


def _write_run(strings: Iterable[str], file: Path) -> Path:
    schema = pa.schema([("s", pa.binary())])
    with pa.OSFile(str(file), "wb") as sink, ipc.new_stream(sink, schema) as w:
        it = iter(strings)
        while chunk := list(itertools.islice(it, BLOCK_ROWS)):
            w.write_batch(pa.record_batch([pa.array(to_bytes(chunk), pa.binary())], schema=schema))
    return file


def _read_run(file: Path) -> Iterator[str]:
    with pa.OSFile(str(file), "rb") as fh:
        for b in ipc.open_stream(fh):
            yield from from_bytes(b.column(0))


def sorted_on_disk(strings: Iterable[str], folder: Path) -> Iterator[str]:
    """``sorted(strings)`` holding at most ``SORT_RUN_ROWS`` of them: sorted runs written under
    ``folder`` and merged, ``MERGE_FAN_IN`` runs at a time."""
    run_rows = SORT_RUN_ROWS
    it = iter(strings)
    buf = list(itertools.islice(it, run_rows))
    if len(buf) < run_rows:
        yield from sorted(buf)
        return
    tmp = Path(tempfile.mkdtemp(prefix="sort-", dir=folder))
    try:
        runs: list[Path] = []
        names = itertools.count()
        while buf:
            runs.append(_write_run(sorted(buf), tmp / f"run-{next(names)}"))
            buf = list(itertools.islice(it, run_rows))
        while len(runs) > MERGE_FAN_IN:
            group, runs = runs[:MERGE_FAN_IN], runs[MERGE_FAN_IN:]
            runs.append(_write_run(heapq.merge(*map(_read_run, group)), tmp / f"run-{next(names)}"))
            for r in group:
                r.unlink()
        yield from heapq.merge(*map(_read_run, runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
