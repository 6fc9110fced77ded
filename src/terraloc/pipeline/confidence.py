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


def raw_k(top_k: int, distinct_km: float) -> int:
    """How many candidates to ask the head for: enough for the features and for ``top_k`` distinct places."""
    return max(FEATURE_K, top_k * 10 if distinct_km > 0 else top_k)


@dataclass
class Confident:
    """One image's confidence-stage result."""

    places: list[tuple[float, float, float]]  # (lat, lon, probability), distinct, at most top_k
    confidence: dict[str, float] | None
    features: dict[str, float]
    region: dict[str, Any] | None
    abstained: bool


def confidence_stage(
    raw: list[list[tuple[float, float, float]]],
    top_k: int,
    *,
    calibrator: Calibrator | None,
    distinct_km: float,
    min_confidence: MinConfidence | None,
    region_level: float = 0.9,
) -> list[Confident]:
    """Apply the stage to a batch of raw candidate lists ``[(lat, lon, p), ...]`` (best first, non-empty)."""
    full = [i for i, r in enumerate(raw) if r]
    k = max([1] + [min(len(raw[i]), FEATURE_K) for i in full])
    coords = np.full((len(full), k, 2), np.nan)
    probs = np.zeros((len(full), k))
    for row, i in enumerate(full):
        arr = np.asarray(raw[i][:k], dtype=np.float64).reshape(-1, 3)
        coords[row, : len(arr)] = arr[:, :2]
        probs[row, : len(arr)] = arr[:, 2]
    feats = confidence_features(coords, probs)
    conf = calibrator.predict_dicts(feats.select(calibrator.feature_names)) if calibrator is not None else None
    at = {i: row for row, i in enumerate(full)}
    out = []
    for i, r in enumerate(raw):
        if i not in at:
            out.append(Confident([], None, {}, None, False))
            continue
        arr = np.asarray(r, dtype=np.float64).reshape(-1, 3)
        xy, p, _ = merge_distinct(arr[:, :2], arr[:, 2], distinct_km)
        region = confidence_region(xy, p, level=region_level, radius_km=distinct_km)
        region.pop("geometry")
        c = conf[at[i]] if conf is not None else None
        abstain = min_confidence is not None and not min_confidence.accepts(c)
        places = [(float(a), float(b), float(q)) for (a, b), q in zip(xy[:top_k], p[:top_k], strict=True)]
        out.append(Confident(places, c, feats.row(at[i]), region, abstain))
    return out
