"""Calibration metrics of predicted probabilities ``P(error <= t)``.

* expected calibration error (ECE): 10 equal-width bins of the predicted probability; the
  absolute gap between the mean prediction and the observed frequency in each bin, weighted by
  the bin's share of photos; in percentage points;
* Brier score (mean squared error of the probability) beside the constant base-rate predictor's
  (``ybar (1 - ybar)``) and the skill ``1 - Brier / base``;
* selective prediction (risk–coverage): accuracy at ``t`` among the ``c``% of photos with the
  highest ``P(error <= t)`` (ties broken by input order), for c = 10, 25, 50, 75, 100.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

COVERAGES: tuple[int, ...] = (10, 25, 50, 75, 100)


def ece(p: NDArray[np.float64], y: NDArray[np.float64], bins: int = 10) -> float:
    """Expected calibration error in percentage points (equal-width bins on [0, 1])."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.size == 0:
        return math.nan
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(b, weights=p, minlength=bins) - np.bincount(b, weights=y, minlength=bins))
    return float(100.0 * gap.sum() / p.size)


def reliability_bins(p: NDArray[np.float64], y: NDArray[np.float64], bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty bin: ``{"lo", "hi", "n", "mean_p", "freq"}`` (for the reliability diagram)."""
    b = np.minimum((np.asarray(p) * bins).astype(np.int64), bins - 1)
    out = []
    for i in range(bins):
        m = b == i
        if m.any():
            out.append(
                {
                    "lo": i / bins,
                    "hi": (i + 1) / bins,
                    "n": int(m.sum()),
                    "mean_p": float(p[m].mean()),
                    "freq": float(y[m].mean()),
                }
            )
    return out


def brier(p: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float, float]:
    """``(brier, base_rate_brier, skill)``; skill = ``1 - brier / base`` (nan when base is 0)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.size == 0:
        return math.nan, math.nan, math.nan
    b = float(np.mean((p - y) ** 2))
    ybar = float(y.mean())
    base = ybar * (1.0 - ybar)
    return b, base, (1.0 - b / base) if base > 0 else math.nan


def selective_accuracy(
    confidence: NDArray[np.float64], correct: NDArray[np.float64], coverages: tuple[int, ...] = COVERAGES
) -> dict[str, float]:
    """Percent correct among the most confident ``c``% (``ceil(c N / 100)`` photos) for each coverage."""
    n = len(confidence)
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    out = {}
    for c in coverages:
        m = max(1, math.ceil(c * n / 100.0)) if n else 0
        out[str(c)] = float(100.0 * np.mean(np.asarray(correct)[order[:m]])) if m else math.nan
    return out


def calibration_report(
    probs: NDArray[np.float64], errors_km: NDArray[np.float64], thresholds_km: tuple[int, ...]
) -> dict[str, Any]:
    """All calibration figures for ``(N, T)`` probabilities against ``(N,)`` errors in km.

    Returns:
        ``{"n", "ece": {t: points}, "brier": {t}, "brier_base": {t}, "brier_skill": {t},
        "selective": {t: {coverage: percent}}, "reliability": {t: [bins]}}`` (keys are strings).
    """
    probs = np.asarray(probs, dtype=np.float64)
    errors_km = np.asarray(errors_km, dtype=np.float64)
    out: dict[str, Any] = {
        "n": len(errors_km),
        "ece": {},
        "brier": {},
        "brier_base": {},
        "brier_skill": {},
        "selective": {},
        "reliability": {},
    }
    for j, t in enumerate(thresholds_km):
        y = (errors_km <= t).astype(np.float64)
        p = probs[:, j]
        b, base, skill = brier(p, y)
        out["ece"][str(t)] = round(ece(p, y), 2)
        out["brier"][str(t)] = round(b, 4)
        out["brier_base"][str(t)] = round(base, 4)
        out["brier_skill"][str(t)] = round(skill, 3)
        out["selective"][str(t)] = {k: round(v, 1) for k, v in selective_accuracy(p, y).items()}
        out["reliability"][str(t)] = reliability_bins(p, y)
    return out
