"""The confidence stage of the :class:`~terraloc.pipeline.Geolocator`.

Per image, from the head's raw candidate list (best first): confidence features over the first
:data:`FEATURE_K` candidates, the calibrated ``P(error <= t)`` when a calibrator is loaded,
distinct places (merged within ``distinct_km``), the 90% region, and abstention under
``min_confidence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from terraloc.confidence import Calibrator, MinConfidence, confidence_features, confidence_region, merge_distinct
from terraloc.confidence.identity import FEATURE_K, pipeline_identity

__all__ = ["FEATURE_K", "Confident", "confidence_stage", "pipeline_identity", "raw_k"]


def raw_k(top_k: int, distinct_km: float, calibrated: bool) -> int:
    """How many candidates to ask the head for.

    With distinct places or a calibrator: enough for the features (20) and for ``top_k`` distinct
    places. With neither (``distinct_km = 0``, no calibrator): exactly ``top_k``, so the list is the
    head's own top-k even for heads whose output depends on k (rescoring, normalising over k).
    """
    if distinct_km <= 0 and not calibrated:
        return top_k
    return max(FEATURE_K, top_k * 10 if distinct_km > 0 else top_k)


@dataclass
class Confident:
    """One image's confidence-stage result."""

    places: list[tuple[float, float, float, dict[str, Any]]]  # (lat, lon, p, evidence), distinct, <= top_k
    confidence: dict[str, float] | None
    features: dict[str, float] | None
    region: dict[str, Any] | None
    abstained: bool


def confidence_stage(
    cands: Any,
    top_k: int,
    *,
    calibrator: Calibrator | None,
    distinct_km: float,
    min_confidence: MinConfidence | None,
    region_level: float = 0.9,
) -> list[Confident]:
    """Apply the stage to a batch of :class:`~terraloc.models.head.Candidates` (best first).

    A merged place keeps its best member's coordinates and evidence (plus ``"merged": n`` when it
    absorbed others). An image without candidates gets no confidence. Features are reported only
    when the head returned at least :data:`FEATURE_K` candidates (what calibrators are fitted on).
    """
    coords = np.asarray(cands.coords, dtype=np.float64)[:, :FEATURE_K]
    probs = np.asarray(cands.probs, dtype=np.float64)[:, :FEATURE_K]
    full = [i for i in range(cands.n) if np.isfinite(coords[i, :, 0]).any()]
    feats = confidence_features(coords[full], probs[full]) if full else None
    conf = None
    if calibrator is not None and feats is not None:
        conf = calibrator.predict_dicts(feats.select(calibrator.feature_names))
    at = {i: row for row, i in enumerate(full)}
    out = []
    for i in range(cands.n):
        if i not in at or feats is None:
            out.append(Confident([], None, None, None, False))
            continue
        rows = cands.rows(i)
        arr = np.array([[r[0], r[1], r[2]] for r in rows], dtype=np.float64)
        xy, p, n = merge_distinct(arr[:, :2], arr[:, 2], distinct_km)
        leaders = _leaders(arr[:, :2], xy)
        places = []
        for j in range(min(top_k, len(xy))):
            ev = dict(rows[leaders[j]][3])
            if n[j] > 1:
                ev["merged"] = int(n[j])
            places.append((float(xy[j, 0]), float(xy[j, 1]), float(p[j]), ev))
        region = confidence_region(xy, p, level=region_level, radius_km=distinct_km)
        region.pop("geometry")
        c = conf[at[i]] if conf is not None else None
        abstain = min_confidence is not None and not min_confidence.accepts(c)
        enough = cands.k >= FEATURE_K
        out.append(Confident(places, c, feats.row(at[i]) if enough else None, region, abstain))
    return out


def _leaders(raw: np.ndarray, kept: np.ndarray) -> list[int]:
    """Index in ``raw`` of each kept place (its best member: the first identical row)."""
    return [int(np.flatnonzero((raw == k).all(axis=1))[0]) for k in kept]
