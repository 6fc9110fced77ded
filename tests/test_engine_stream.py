"""Inputs streamed to disk by the driver (manifests, folders, globs, lists) give the same job inputs as
``read_photo_inputs`` read into memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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

    monkeypatch.setattr(stream, "CHUNK_ROWS", 7)  # several chunks
    df = _manifest(shared, tmp_path)
    path = tmp_path / f"photos{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.astype(str).to_parquet(path)
    a, b = _in_memory(str(path)), stream.open_work_items(path)
    assert isinstance(b, stream.StreamedItems)
    assert len(a) == len(b) == 30 and a.has_coords and b.has_coords
    assert a.digest() == b.digest() and a.skipped == b.skipped and len(b.skipped) == 1
    for lo, hi in [(0, 30), (0, 1), (6, 15), (25, 30)]:
        (ia, pa_, ca), (ib, pb, cb) = a.part(lo, hi), b.part(lo, hi)
        assert ia == ib and pa_ == pb
        assert ca is not None and cb is not None
        np.testing.assert_array_equal(ca, cb)


def test_streamed_parquet_integer_ids_read_as_the_whole_file(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import terraloc.engine.stream as stream

    monkeypatch.setattr(stream, "CHUNK_ROWS", 2)  # the null (a blank row) in one chunk only
    photos = [str(p) for p in sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:6]]
    ids = pa.array([1, 2, None, 4, 5, 6, 7], pa.int64())
    pq.write_table(pa.table({"img_id": ids, "path": [*photos[:2], None, *photos[2:]]}), tmp_path / "m.parquet")
    items = _same(str(tmp_path / "m.parquet"), id_col="img_id")
    assert items.part(0, 3)[0] == ["1.0", "2.0", "4.0"]  # as pandas reads the whole file


def test_streamed_manifest_refuses_a_duplicate_id_across_chunks(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terraloc.engine.stream as stream

    monkeypatch.setattr(stream, "CHUNK_ROWS", 5)
    path = tmp_path / "dup.csv"
    _manifest(shared, tmp_path, duplicate=True).to_csv(path, index=False)
    with pytest.raises(InputError) as mem:
        _in_memory(str(path))
    with pytest.raises(InputError) as streamed:
        stream.open_work_items(path)
    assert str(streamed.value) == str(mem.value) and "duplicate image id" in str(mem.value)


# --------------------------------------------------------------------------- every input kind


def _in_memory(spec: str | list[str], *, stem_ids: bool = False, **kw: Any) -> Any:
    """What the engine read before its inputs were streamed: ``read_photo_inputs`` in memory, then
    the id rules (paths as ids when ids repeat without --id-col; database builds: unique stems)."""
    from terraloc.engine.inputs import WorkItems
    from terraloc.inputs import read_photo_inputs

    pi = read_photo_inputs(spec, **kw)
    ids = [str(i) for i in pi.ids]
    if len(set(ids)) != len(ids) and kw.get("id_col") is None:
        ids = [str(p) for p in pi.paths]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"duplicate photo id '{dup}' (give distinct ids with --id-col)", field="id")
    if stem_ids and kw.get("id_col") is None and len({Path(i).stem for i in ids}) == len(ids):
        ids = [Path(i).stem for i in ids]
    coords = None if pi.coords is None else np.asarray(pi.coords, dtype=np.float64).reshape(-1, 2)
    return WorkItems(ids, [str(p) for p in pi.paths], coords, list(pi.skipped))


def _same(spec: str | list[str], **kw: Any) -> Any:
    """The streamed inputs equal the in-memory ones: ids, paths, coordinates, skipped, digest."""
    import terraloc.engine.stream as stream

    a, b = _in_memory(spec, **kw), stream.open_work_items(spec, **kw)
    n = len(a)
    assert len(b) == n and b.has_coords == a.has_coords
    assert b.skipped == a.skipped
    for lo, hi in [(0, n), (0, 1), (n // 3, n - 2), (n - 1, n)]:
        (ia, pa_, ca), (ib, pb, cb) = a.part(lo, hi), b.part(lo, hi)
        assert ib == ia and pb == pa_
        if ca is None:
            assert cb is None
        else:
            np.testing.assert_array_equal(cb, ca)
    assert b.digest() == a.digest()
    return b


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of photos (some geotagged) in sub-folders whose names sort differently as paths and
    as names (``x``, ``x-1``, ``x.d``), with repeated file stems, non-images, hidden files and a
    manifest; chunks, sorted runs and merges forced small."""
    from PIL import Image

    import terraloc.engine.disksort as disksort
    import terraloc.engine.stream as stream

    monkeypatch.setattr(stream, "CHUNK_ROWS", 3)
    monkeypatch.setattr(disksort, "SORT_RUN_ROWS", 4)
    monkeypatch.setattr(disksort, "MERGE_FAN_IN", 2)
    monkeypatch.setattr(disksort, "BLOCK_ROWS", 3)
    root = tmp_path / "photos"

    def jpg(rel: str, gps: tuple[float, float] | None = None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        if gps is not None:
            lat, lon = gps
            exif[0x8825] = {1: "N", 2: (float(lat), 0.0, 0.0), 3: "E", 4: (float(lon), 0.0, 0.0)}
        Image.new("RGB", (8, 8), (len(rel), 20, 30)).save(path, "JPEG", exif=exif)

    for i, rel in enumerate(["b.jpg", "a.JPEG", "x/a.jpg", "x/deep/c.png", "x-1/d.jpg", "x.d/e.jpg", "x/f.jpg",
                             "x-1/b.jpg", "y/g.jpeg", "y/h.jpg", "y/z/i.jpg", "y/z/j.jpg", "k.jpg"]):  # fmt: skip
        jpg(rel, gps=None if i % 4 == 3 else (10 + i, 20 + i))
    (root / "notes.txt").write_text("hello")
    (root / "x" / "readme").write_text("no suffix")
    (root / ".DS_Store").write_bytes(b"x")
    jpg(".cache/thumb.jpg")
    (root / "metadata.csv").write_text("IMG_ID,LAT,LON\nb.jpg,1,2\n")
    return root


def test_streamed_folder_equals_in_memory(tree: Path) -> None:
    items = _same(str(tree))
    assert len(items) == 13 and not items.has_coords
    assert Path(items.part(0, 1)[0][0]).name == "a.JPEG"  # stems repeat ("a", "b"): the paths are the ids
    reasons = dict(items.skipped)
    assert reasons[str(tree / ".DS_Store")] == "hidden file" and reasons[str(tree / ".cache")] == "hidden folder"
    assert reasons[str(tree / "notes.txt")].startswith("not an image")
    geo = _same(str(tree), require_coords=True)
    assert geo.has_coords and len(geo) == 10 and sum(r == "no EXIF GPS position" for _, r in geo.skipped) == 3
    _same(str(tree / "x"))  # unique stems: the stems are the ids


def test_streamed_globs_equal_in_memory(tree: Path) -> None:
    every = _same(str(tree / "**" / "*"))  # folders and the files in them both match: listed once
    assert len(every) == 13
    _same(str(tree / "**" / "*.jpg"), require_coords=True)
    _same(str(tree / "x*" / "*.jpg"))
    _same(str(tree / "y" / "*"), require_coords=True, stem_ids=True)


def test_streamed_list_of_paths_equals_in_memory(tree: Path) -> None:
    (tree / "m.tsv").write_text(f"path\tlat\tlon\n{tree / 'k.jpg'}\t1\t2\ny/g.jpeg\t3\t4\n\nmissing.jpg\t5\t6\n")
    tsv = _same(str(tree / "m.tsv"))
    assert tsv.has_coords and len(tsv) == 2 and len(tsv.skipped) == 1
    spec = [str(tree / "k.jpg"), str(tree / "y"), str(tree / "k.jpg"), str(tree / "nope.jpg"),
            str(tree / "x-1" / "*.jpg"), str(tree / "m.tsv"), str(tree / "b.jpg")]  # fmt: skip
    items = _same(spec)
    assert len(items) == 8 and (str(tree / "nope.jpg"), "file not found") in items.skipped
    _same(spec, require_coords=True)  # every item then carries coordinates
    _same(spec[:3], require_coords=True, stem_ids=True)


def test_streamed_errors_equal_in_memory(tree: Path) -> None:
    import terraloc.engine.stream as stream

    (tree / "empty").mkdir()
    (tree / "empty" / "a.txt").write_text("x")
    (tree / "m1.csv").write_text("id,path\nsame,b.jpg\n")
    (tree / "m2.csv").write_text("id,path\nsame,k.jpg\n")
    (tree / "x" / "deep" / "metadata.csv").write_text("IMG_ID,LAT,LON\nc.png,1,2\n")
    said = []
    for spec, kw in [
        (str(tree / "empty"), {}),
        (str(tree / "*.png"), {}),
        (str(tree / "x" / "deep"), {"require_coords": True}),  # only a photo without GPS: the hint names the manifest
        ([str(tree / "m1.csv"), str(tree / "m2.csv")], {"id_col": "id"}),
        ([str(tree / "nope"), str(tree / "empty")], {}),
    ]:
        with pytest.raises(InputError) as mem:
            _in_memory(spec, **kw)  # type: ignore[arg-type]
        with pytest.raises(InputError) as streamed:
            stream.open_work_items(spec, **kw)  # type: ignore[arg-type]
        assert str(streamed.value) == str(mem.value)
        said.append(str(streamed.value))
    assert "pattern matches no files" in said[1] and "--photos" in said[2] and "photo id 'same'" in said[3]


def test_streamed_folder_keeps_non_utf8_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import terraloc.engine.stream as stream

    monkeypatch.setattr(stream, "CHUNK_ROWS", 2)
    root = tmp_path / "odd"
    root.mkdir()
    for name in (b"caf\xe9.jpg", b"plain.jpg", "ünï.jpg".encode()):
        (root / os.fsdecode(name)).write_bytes(b"not decoded here")
    items = _same(str(root))
    assert sorted(items.part(0, 3)[0]) == sorted(["caf\udce9", "plain", "ünï"])


def test_sorted_on_disk_equals_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import terraloc.engine.disksort as disksort

    monkeypatch.setattr(disksort, "SORT_RUN_ROWS", 7)
    monkeypatch.setattr(disksort, "MERGE_FAN_IN", 3)
    monkeypatch.setattr(disksort, "BLOCK_ROWS", 2)
    rng = random.Random(0)
    alphabet = ["a", "b", "/", "-", ".", " ", "é", "\udce9", "Z"]
    strings = ["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(200)]
    assert list(disksort.sorted_on_disk(iter(strings), tmp_path)) == sorted(strings)
    assert list(tmp_path.iterdir()) == []  # runs removed


def test_db_build_inputs_are_streamed_with_stem_ids(tree: Path) -> None:
    from terraloc.engine.refdb_build import geotagged_items
    from terraloc.engine.stream import StreamedItems

    items = geotagged_items(str(tree / "y"))
    assert isinstance(items, StreamedItems) and items.has_coords
    assert items.part(0, len(items))[0] == ["g", "h", "i"]  # j.jpg has no GPS position
    assert items.skipped == [(str(tree / "y" / "z" / "j.jpg"), "no EXIF GPS position")]
    assert items.digest() == _in_memory(str(tree / "y"), stem_ids=True, require_coords=True).digest()
    every = geotagged_items(str(tree))  # stems repeat: the paths stay the ids
    assert every.part(0, 1)[0] == [str(tree / "a.JPEG")]


def test_key_set_finds_every_repeat_and_its_first_occurrence() -> None:
    import random

    from terraloc.engine.keyset import KeySet

    rng = random.Random(1)
    texts = [f"t{rng.randint(0, 300)}" for _ in range(1000)]
    keys = KeySet()
    first_at: dict[str, int] = {}
    for lo in range(0, len(texts), 37):  # chunks: repeats within one and across chunks, runs merged
        chunk = texts[lo : lo + 37]
        seen, first = keys.add(chunk, list(range(lo, lo + len(chunk))))
        for j, t in enumerate(chunk):
            assert bool(seen[j]) == (t in first_at) and (not seen[j] or first[j] == first_at[t])
            first_at.setdefault(t, lo + j)
    assert len(keys.runs) <= 11 and sum(len(k) for k, _ in keys.runs) == len(first_at)
