"""`terraloc predict --reasoner rag` end to end: a database built from the shared street-level photos,
queried with shared Im2GPS3k photos; the reference database as a candidate source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def local_db(shared: Path, tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.engine import build_refdb, geotagged_items, make_engine

    db = tmp_path_factory.mktemp("refdb") / "db"
    osv = geotagged_items(shared / "data/photos/osv5m/osv5m_photos.csv")
    build_refdb(osv, str(tiny_clip), db, make_engine("local", workers=2))
    return db


@pytest.mark.slow
def test_ray_engine_builds_the_same_database(
    shared: Path, tmp_path: Path, cli, tiny_clip: Path, local_db: Path
) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from terraloc.search.refdb import ReferenceDatabase

    pytest.importorskip("ray")
    # A CSV with one unreadable photo: both engines must skip and list it.
    src = shared / "data/photos/osv5m"
    rows = pd.read_csv(src / "osv5m_photos.csv").head(20)
    rows["path"] = [str(src / p) for p in rows["path"]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows.loc[len(rows)] = [str(broken), 0, 10.0, 20.0, "x", "y"]
    csv_path = tmp_path / "refs.csv"
    rows.to_csv(csv_path, index=False)
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"db-{engine}"
        r = cli("db", "build", "--photos", csv_path, "--backbone", tiny_clip, "--out", outs[engine],
                "--engine", engine, "--workers", "1", "--batch-size", "8", "--shard-size", "12")  # fmt: skip
        assert r.code == 2, r.err  # a skipped photo is reported and fails the run; the rest is built
        assert "broken.jpg" in r.err
    a, b = ReferenceDatabase.load(outs["local"]), ReferenceDatabase.load(outs["ray"])
    assert len(a) == len(b) == 20
    pd.testing.assert_frame_equal(a.table, b.table)
    ea, eb = np.asarray(a.embeddings), np.asarray(b.embeddings)
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    assert (a.search(ea, 3)[1] == b.search(ea, 3)[1]).all()
    assert a.manifest["backbone"] == b.manifest["backbone"]
    assert (outs["ray"] / "skipped.csv").read_text() == (outs["local"] / "skipped.csv").read_text()


@pytest.mark.slow
def test_predict_with_rag_reasoner(shared: Path, cli, local_db: Path, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.rag.candidates import ReferenceDatabaseSource
    from terraloc.search.refdb import ReferenceDatabase

    db = local_db
    photos = sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:3]
    r = cli("predict", *photos, "--db", db, "--reasoner", "rag", "--format", "json", "--top-k", "3")
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines() if line.strip()]
    assert len(rows) == 3
    ref = ReferenceDatabase.load(db)
    known = {(round(a, 4), round(b, 4)) for a, b in ref.coords}
    for row in rows:
        assert row["error"] is None
        assert row["model"]["reasoner"] == {"name": "rag", "llm": None, "neighbour_counts": [5, 10, 15], "n_far": 5}
        cands = row["candidates"]
        assert 1 <= len(cands) <= 3
        probs = [c["probability"] for c in cands]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        # Without an LLM every ranked location is one of the reference photos' locations.
        assert all((round(c["lat"], 4), round(c["lon"], 4)) in known for c in cands)
        assert cands[0]["country"]

    # The database behind the candidate-source interface: nearest and farthest (negated query).
    q = np.asarray(ref.embeddings[:1], dtype=np.float32)
    near = ReferenceDatabaseSource(ref).candidates(q, 3)[0]
    far = ReferenceDatabaseSource(ref, farthest=True).candidates(q, 3)[0]
    assert near[0].latlon == pytest.approx(tuple(ref.coords[0])) and near[0].score == pytest.approx(1.0, abs=1e-4)
    assert far[0].score < near[-1].score and far[0].source == "refdb-farthest"

    # Bad combinations are one-line errors.
    r = cli("predict", photos[0], "--db", db, "--reasoner", "magic")
    assert r.code == 2 and "unknown reasoner" in r.err


@pytest.mark.slow
def test_rag_reasoner_after_the_geoclip_head_without_a_database(
    shared: Path, cli, tiny_clip: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The reasoning stage ranks any head's candidates: GeoCLIP's gallery top-k, no database needed."""
    coords = shared / "data/photos/osv5m/osv5m_photos.csv"
    gallery = tmp_path / "gallery"
    assert cli("gallery", "build", "--coords", coords, "--out", gallery).code == 0
    photo = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[0]
    # --distinct-km 0: the head's own top-5, not merged into distinct places
    base = ("predict", photo, "--backbone", tiny_clip, "--gallery", gallery, "--top-k", "5", "--format", "jsonl",
            "--distinct-km", "0")  # fmt: skip
    plain = cli(*base, "--no-places")
    staged = cli(*base, "--no-places", "--reasoner", "rag")
    assert plain.code == 0 and staged.code == 0, plain.err + staged.err
    head_cands = {(round(c["lat"], 5), round(c["lon"], 5)) for c in json.loads(plain.out)["candidates"]}
    row = json.loads(staged.out)
    assert row["model"]["reasoner"]["name"] == "rag"
    # Without a database or an LLM, the reasoner can only re-rank the head's own candidates.
    got = [(round(c["lat"], 5), round(c["lon"], 5)) for c in row["candidates"]]
    assert got and set(got) <= head_cands
