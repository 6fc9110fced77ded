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
    from terraloc.engine import make_engine
    from terraloc.engine.refdb_build import build_refdb, geotagged_items

    db = tmp_path_factory.mktemp("refdb") / "db"
    items = geotagged_items(shared / "data/photos/osv5m/osv5m_photos.csv")
    build_refdb(items, str(tiny_clip), db, make_engine("local"))
    return db


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
        assert row["model"]["reasoner"] == {"name": "rag", "llm": None, "neighbour_counts": [5, 10], "n_far": 5}
        cands = row["candidates"]
        assert 1 <= len(cands) <= 3
        probs = [c["probability"] for c in cands]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        # Without an LLM every ranked location is one of the reference photos' locations.
        assert all((round(c["lat"], 4), round(c["lon"], 4)) in known for c in cands)
        assert cands[0]["country"]

    # The database behind the candidate-source interface: nearest and farthest (negated query).
    q = ref.index.reconstruct(0)[None, :].astype(np.float32)
    near = ReferenceDatabaseSource(ref).candidates(q, 3)[0]
    far = ReferenceDatabaseSource(ref, farthest=True).candidates(q, 3)[0]
    assert near[0].latlon == pytest.approx(tuple(ref.coords[0])) and near[0].score == pytest.approx(1.0, abs=1e-4)
    assert far[0].score < near[-1].score and far[0].source == "refdb-farthest"

    # Bad combinations are one-line errors.
    r = cli("predict", photos[0], "--reasoner", "rag", "--backbone", tiny_clip)
    assert r.code == 2 and "needs a reference database" in r.err
    r = cli("predict", photos[0], "--db", db, "--reasoner", "magic")
    assert r.code == 2 and "unknown reasoner" in r.err
