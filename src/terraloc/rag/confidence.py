"""Confidence features of RAG selections (``rag eval``, ``rag calibrate`` inputs).

The candidates are a photo's nearest references (the top ``GeoConsensusConfig.top_k``) weighted as
geo-consensus weighs them (``1 / (1 + rank) ** alpha``, normalised); the answer is the
selected location (its index among them, or an extra point when an LLM answer won); the
farthest references and the valid LLM answers are the RAG extras.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.confidence.features import Features, confidence_features
from terraloc.rag.candidates import Candidate, CandidateSet, coords_of
from terraloc.rag.select import GeoConsensusConfig, Selection, rank_weights


def _padded(rows: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    m = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(m, 1), 2), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def rag_features(
    csets: Sequence[CandidateSet],
    selections: Sequence[Selection],
    config: GeoConsensusConfig | None = None,
    llm_answers: Sequence[Sequence[Candidate]] | None = None,
) -> Features:
    """``N`` photos' confidence features for the given selections.

    Photos whose selection failed (no location) get the first candidate as the answer; their
    confidence is irrelevant since they have no prediction to score.
    """
    cfg = config or GeoConsensusConfig()
    coords, probs, tops, fars, llms = [], [], [], [], []
    for i, (cs, sel) in enumerate(zip(csets, selections, strict=True)):
        pool = sorted(cs.pool(), key=lambda c: c.rank)[: cfg.top_k]
        xy = coords_of(pool)
        w = rank_weights(pool, cfg.alpha)
        ti = 0
        if sel.ok and len(xy):
            d = np.abs(xy[:, 0] - sel.lat) + np.abs(xy[:, 1] - sel.lon)
            j = int(np.argmin(d))
            if d[j] < 1e-9:
                ti = j
            else:  # an LLM answer won: add it as a zero-weight candidate that is the answer
                xy = np.vstack([xy, [[sel.lat, sel.lon]]])
                w = np.append(w, 0.0)
                ti = len(xy) - 1
        coords.append(xy)
        probs.append(w)
        tops.append(ti)
        fars.append(coords_of(cs.farthest))
        if llm_answers is not None:
            llms.append(coords_of(list(llm_answers[i])))
    xy = _padded(coords)
    p = np.zeros(xy.shape[:2])
    for i, w in enumerate(probs):
        p[i, : len(w)] = w
    far = _padded(fars) if any(len(f) for f in fars) else None
    llm = _padded(llms) if llm_answers is not None else None
    return confidence_features(xy, p, top=np.asarray(tops), farthest=far, llm=llm)


def rag_identity(
    method: str, config: GeoConsensusConfig | None = None, source: str = "candidates-file"
) -> dict[str, Any]:
    """The configuration identity of a RAG selection method (what a calibrator is tied to)."""
    cfg = config or GeoConsensusConfig()
    return {
        "head": "rag",
        "source": source,
        "method": method,
        "consensus": {"top_k": cfg.top_k, "bandwidths_km": list(cfg.bandwidths_km), "alpha": cfg.alpha},
        "features": "terraloc.confidence v1",
    }
