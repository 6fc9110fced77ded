"""The reasoning stage after any head: `rag eval` and `predict --reasoner rag` choose alike."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from terraloc.rag.candidates import coords_of


def test_rag_eval_and_the_predict_reasoner_choose_the_same(shared: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.rag.candidates_file import read_candidates_file
    from terraloc.rag.pipeline_reasoner import RagReasoner

    cand = shared / "data" / "rag" / "g3_candidates_im2gps3k_dev.csv"
    r = cli("rag", "eval", "--candidates", cand, "--limit", "60", "--bootstrap", "5", "--out", tmp_path, "--json")
    assert r.code == 0, r.err
    with (tmp_path / "predictions_default.csv").open() as fh:
        evaluated = {row["image"]: (float(row["lat"]), float(row["lon"])) for row in csv.DictReader(fh)}
    sets = read_candidates_file(cand, limit=60).sets
    assert len(evaluated) == len(sets) == 60
    reasoner = RagReasoner()  # the predict path's reasoner with its defaults, no LLM
    assert reasoner.describe()["neighbour_counts"] == [5, 10, 15]
    for cs in sets:
        # as the pipeline hands them over: arrays of the nearest and farthest references
        near = (coords_of(cs.nearest), np.array([c.score for c in cs.nearest]))
        far = (coords_of(cs.farthest), np.array([c.score for c in cs.farthest]))
        lat, lon, p = reasoner.rank(cs.image, near, far, top_k=3)[0]
        assert (lat, lon) == evaluated[cs.image], cs.image
        assert 0 < p <= 1
        # the same candidates handed over as a head's (GeoCLIP gallery top-k, ...) rank the same
        top = reasoner.rank(cs.image, head=near, top_k=1)
        assert [(a, b) for a, b, _ in top] == [evaluated[cs.image]]


def test_reasoner_ranks_distinct_locations_by_consensus() -> None:
    from terraloc.rag.pipeline_reasoner import RagReasoner

    paris = np.array([[48.85, 2.35], [48.86, 2.34], [48.84, 2.36], [40.7, -74.0], [48.85, 2.35]])
    ranked = RagReasoner().rank("x", head=(paris, np.array([0.1, 0.3, 0.2, 0.9, 0.1])), top_k=5)
    # the Paris cluster beats New York; the duplicate of rank 0 is merged (within 1 km)
    assert len(ranked) == 4 and ranked[-1][:2] == (40.7, -74.0)
    assert abs(ranked[0][0] - 48.85) < 0.02 and abs(sum(p for *_, p in ranked) - 1) < 1e-9
    # NaN-padded head rows (fewer candidates than k) are ignored
    padded = np.vstack([paris[:1], [[np.nan, np.nan]]])
    assert RagReasoner().rank("y", head=(padded, np.array([1.0, 0.0])), top_k=2) == [(48.85, 2.35, 1.0)]
