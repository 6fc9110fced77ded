"""A manifest streamed to disk by the driver gives the same job inputs as one read into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from terraloc.errors import InputError


def _manifest(shared: Path, d: Path, *, duplicate: bool = False) -> pd.DataFrame:
    src = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:30]
    rows = [{"id": p.stem, "path": str(p), "lat": 10.0 + i / 7, "lon": -20.0 - i / 3} for i, p in enumerate(src)]
    rows.insert(5, {"id": "gone", "path": str(d / "missing.jpg"), "lat": 1.0, "lon": 2.0})
    rows.insert(12, {"id": "", "path": "", "lat": "", "lon": ""})  # a blank row
    if duplicate:
        rows.append(dict(rows[3]))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_manifest_equals_in_memory(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    import terraloc.engine.stream as stream
    from terraloc.engine import read_work_items

    monkeypatch.setattr(stream, "CHUNK_ROWS", 7)  # several chunks
    df = _manifest(shared, tmp_path)
    path = tmp_path / f"photos{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.astype(str).to_parquet(path)
    a, b = read_work_items(path), stream.open_work_items(path)
    assert isinstance(b, stream.StreamedItems)
    assert len(a) == len(b) == 30 and a.has_coords and b.has_coords
    assert a.digest() == b.digest() and a.skipped == b.skipped and len(b.skipped) == 1
    for lo, hi in [(0, 30), (0, 1), (6, 15), (25, 30)]:
        (ia, pa_, ca), (ib, pb, cb) = a.part(lo, hi), b.part(lo, hi)
        assert ia == ib and pa_ == pb
        assert ca is not None and cb is not None
        np.testing.assert_array_equal(ca, cb)


def test_streamed_manifest_refuses_a_duplicate_id_across_chunks(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terraloc.engine.stream as stream
    from terraloc.engine import read_work_items

    monkeypatch.setattr(stream, "CHUNK_ROWS", 5)
    path = tmp_path / "dup.csv"
    _manifest(shared, tmp_path, duplicate=True).to_csv(path, index=False)
    with pytest.raises(InputError) as mem:
        read_work_items(path)
    with pytest.raises(InputError) as streamed:
        stream.open_work_items(path)
    assert str(streamed.value) == str(mem.value) and "duplicate image id" in str(mem.value)
