"""The engine on the local backend: partitions, part files, errors table, resume, database assembly.

(The Ray backend and its equivalence with this one are in ``test_engine_ray.py``.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

TINY = "data/reference/geoclip_predict/tiny_clip"


def _rows(out: Path) -> pd.DataFrame:
    man = json.loads((out / "manifest.json").read_text())
    df = pd.concat([pq.read_table(out / p["file"]).to_pandas() for p in man["parts"]], ignore_index=True)
    return df.sort_values("index").reset_index(drop=True)


@pytest.fixture(scope="module")
def photos(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest: 30 OSV-5M photos with coordinates, a zero-byte file and a text file."""
    d = tmp_path_factory.mktemp("inputs")
    src = shared / "data/photos/osv5m"
    df = pd.read_csv(src / "osv5m_photos.csv").head(30)
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not a photo")
    rows = [(str(src / p), a, b) for p, a, b in zip(df["path"], df["lat"], df["lon"], strict=True)]
    rows.insert(7, (str(d / "empty.jpg"), 10.0, 20.0))
    rows.append((str(d / "text.jpg"), -10.0, 30.0))
    pd.DataFrame(rows, columns=["path", "lat", "lon"]).to_csv(d / "photos.csv", index=False)
    return d / "photos.csv"


def test_partitions_depend_on_the_count_only() -> None:
    from terraloc.engine.plan import default_part_size, partitions

    assert default_part_size(10) == 16 and default_part_size(20_000) == 313 and default_part_size(10**7) == 1024
    parts = partitions(50, 16)
    assert [(p.lo, p.hi) for p in parts] == [(0, 16), (16, 32), (32, 48), (48, 50)]
    assert [p.pid for p in parts] == [0, 1, 2, 3]


def test_embed_job_parts_errors_resume(shared: Path, photos: Path, tmp_path: Path) -> None:
    from terraloc.engine import EmbedSpec, make_engine, read_work_items, run_job
    from terraloc.errors import InputError
    from terraloc.train.shards import ShardSet

    items = read_work_items(photos)
    assert len(items) == 32 and items.coords is not None
    spec = EmbedSpec(str(shared / TINY), batch_size=8)
    eng = make_engine("local", workers=1)
    full = tmp_path / "full"
    s = run_job(spec, items, full, eng, part_size=8)
    assert (s.total, s.done, s.failed, s.skipped, s.parts, s.parts_written) == (32, 30, 2, 0, 4, 4)
    rows = _rows(full)
    assert len(rows) == 30 and rows["index"].is_unique and 7 not in set(rows["index"])
    emb = np.stack(rows["embedding"].to_numpy())
    assert emb.shape == (30, 768) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.allclose(rows[["lat", "lon"]].to_numpy(), items.coords[rows["index"]])
    with open(full / "errors.csv", newline="") as fh:
        errs = list(csv.DictReader(fh))
    assert [e["path"].rsplit("/", 1)[-1] for e in errs] == ["empty.jpg", "text.jpg"]
    assert errs[0]["index"] == "7" and errs[0]["reason"] and errs[1]["index"] == "31"
    # readable as training shards
    ss = ShardSet(full)
    assert ss.n_rows == 30 and ss.dim == 768
    # the same call again does nothing
    again = run_job(spec, items, full, eng, part_size=8)
    assert (again.done, again.skipped, again.parts_written) == (0, 32, 0)

    # interrupted after the second part, then resumed: same rows as the uninterrupted run
    part = tmp_path / "part"
    seen: list[int] = []

    def stop(p) -> None:  # type: ignore[no-untyped-def]
        seen.append(p.done)
        if p.done > 16:  # inside the third part
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, items, part, eng, part_size=8, on_progress=stop)
    assert not (part / "manifest.json").exists() and len(list((part / "parts").glob("*.parquet"))) == 2
    resumed = run_job(spec, items, part, eng, part_size=8)
    assert resumed.skipped == 16 and resumed.parts_written == 2
    a, b = _rows(full), _rows(part)
    assert a[["index", "id", "path"]].equals(b[["index", "id", "path"]])
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-6)
    assert (full / "errors.csv").read_text() == (part / "errors.csv").read_text()

    # another model or other inputs in the same folder are refused
    with pytest.raises(InputError, match="another model"):
        run_job(EmbedSpec("efficientnet-lite0"), items, part, eng, part_size=8)
    items.paths[0] = items.paths[1]
    with pytest.raises(InputError, match="other inputs"):
        run_job(spec, items, part, eng, part_size=8)


def test_db_build_ivf_and_predict_merge(shared: Path, photos: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.search.refdb import ReferenceDatabase

    tiny = shared / TINY
    manifest = photos
    flat, ivf = tmp_path / "flat", tmp_path / "ivf"
    r = cli("db", "build", "--photos", manifest, "--backbone", tiny, "--out", flat, "--no-progress")
    assert r.code == 2 and "2 input(s) skipped" in r.err, r.err  # the two broken files; still built
    r = cli("db", "build", "--photos", manifest, "--backbone", tiny, "--out", ivf, "--index", "IVF4,Flat@nprobe=4",
            "--part-size", "20", "--json")  # fmt: skip
    assert r.code == 2, r.err
    assert json.loads(r.out.strip().splitlines()[-1])["n"] == 30
    skipped = (ivf / "skipped.csv").read_text()
    assert "empty.jpg" in skipped and "text.jpg" in skipped
    a, b = ReferenceDatabase.load(flat), ReferenceDatabase.load(ivf)
    assert b.manifest["index"] == {"spec": "IVF4,Flat", "options": {"params": "nprobe=4"}}
    assert not (ivf / ".work").exists()
    pd.testing.assert_frame_equal(a.table, b.table)
    q = np.asarray(a.embeddings)
    np.testing.assert_allclose(q, np.asarray(b.embeddings), atol=1e-6)
    assert (a.search(q, 3)[1] == b.search(q, 3)[1]).all()  # nprobe = all lists: exact

    # predictions through the engine, merged into a CSV that `terraloc eval` reads
    queries = sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:12]
    preds = tmp_path / "preds.csv"
    r = cli("predict", *queries, tmp_path / "missing.jpg", "--db", flat, "--engine", "local", "--out", preds,
            "--part-size", "5", "--top-k", "3")  # fmt: skip
    assert r.code == 2 and "missing.jpg" in r.err and "12 done" in r.err, r.err
    df = pd.read_csv(preds)
    assert len(df) == 12 * 3 + 1 and df["image"].iloc[0].endswith("missing.jpg")
    assert (tmp_path / "preds.csv.parts" / "manifest.json").exists()
    # the same command again: nothing recomputed, same file
    before = preds.read_text()
    r = cli("predict", *queries, tmp_path / "missing.jpg", "--db", flat, "--engine", "local", "--out", preds,
            "--part-size", "5", "--top-k", "3")  # fmt: skip
    assert "0 done, 12 skipped" in r.err and preds.read_text() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["embed", "--photos", "x.csv"], "--out"),
        (["embed", "--photos", "nowhere/", "--out", "o", "--engine", "spark"], "unknown engine"),
        (["predict", "a.jpg", "--engine", "local"], "--out"),
        (["embed", "--out", "o"], "give photos"),
        (["bench", "engine", "--workers", "0"], "positive"),
    ],
)
def test_engine_options_fail_in_one_line(cli, args: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args)
    assert r.code == 2 and needle in r.err and "Traceback" not in r.err


def test_bench_engine_repeats_and_reports_medians(shared: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", "engine", "--photos", "8", "--engines", "local", "--workers", "1", "--tasks", "embed",
            "--repeat", "3", "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert [x["repeat"] for x in res["runs"]] == [0, 1, 2] and all(x["failed"] == 0 for x in res["runs"])
    [med] = res["medians"]
    rates = sorted(x["photos_per_s"] for x in res["runs"])
    assert med["runs"] == 3 and med["photos_per_s"] == rates[1] and sorted(med["photos_per_s_runs"]) == rates
    r = cli("bench", "engine", "--repeat", "0")
    assert r.code == 2 and "Traceback" not in r.err, r.err
