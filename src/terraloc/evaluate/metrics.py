"""Benchmark metrics, following ``CONVENTIONS.md``.

* accuracy at t km: percent of **all** benchmark images whose prediction is within ``<= t`` km;
  images without a prediction count as wrong (coverage is reported beside it);
* median and mean error in km over the images that *have* a prediction;
* GeoScore: ``5000 * exp(-d / 1492.7)`` averaged over all images (0 for a missing prediction);
* 95% percentile-bootstrap intervals of the accuracies (1,000 resamples, fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.evaluate.benchmarks import GroundTruth
from terraloc.evaluate.ids import image_key
from terraloc.evaluate.predictions import Predictions
from terraloc.evaluate.thresholds import THRESHOLD_KEYS, THRESHOLDS_KM
from terraloc.geo.distance import haversine_km

GEOSCORE_SCALE_KM = 1492.7


@dataclass
class EvalResult:
    """Metrics of one prediction set on one benchmark (percentages, km).

    ``distances_km`` is ``(N,)`` over the benchmark's images, ``inf`` where there is no
    prediction; ``coords_true``/``coords_pred`` are ``(N, 2)`` degrees (NaN where missing).
    """

    benchmark: str
    n: int
    n_predicted: int
    accuracy: dict[str, float]
    median_km: float | None
    mean_km: float | None
    geoscore: float
    ci95: dict[str, tuple[float, float]]
    extra_predictions: int
    distances_km: NDArray[np.float64] = field(repr=False)
    coords_true: NDArray[np.float64] = field(repr=False)
    coords_pred: NDArray[np.float64] = field(repr=False)
    missing_ids: list[str] = field(default_factory=list, repr=False)
    published: dict[str, float] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Percent of benchmark images that have a prediction."""
        return 100.0 * self.n_predicted / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``terraloc eval --json`` object (percentages and km rounded to one decimal)."""
        out: dict[str, Any] = {
            "benchmark": self.benchmark,
            "n": self.n,
            "n_predicted": self.n_predicted,
            "coverage": round(self.coverage, 1),
            "accuracy": {k: round(v, 1) for k, v in self.accuracy.items()},
            "median_km": None if self.median_km is None else round(self.median_km, 1),
            "mean_km": None if self.mean_km is None else round(self.mean_km, 1),
            "geoscore": round(self.geoscore, 1),
            "ci95": {k: [round(lo, 1), round(hi, 1)] for k, (lo, hi) in self.ci95.items()},
            "extra_predictions": self.extra_predictions,
        }
        if self.published:
            out["published"] = self.published
        return out


def accuracy_table(distances_km: NDArray[np.float64]) -> dict[str, float]:
    """Percent of entries ``<=`` each threshold (``inf`` counts as wrong)."""
    d = np.asarray(distances_km, dtype=np.float64)
    if d.size == 0:
        return dict.fromkeys(THRESHOLD_KEYS, 0.0)
    return {key: float(100.0 * np.mean(d <= t)) for key, t in zip(THRESHOLD_KEYS, THRESHOLDS_KM, strict=True)}


def bootstrap_ci(
    distances_km: NDArray[np.float64], n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals of each threshold's accuracy (percent)."""
    d = np.asarray(distances_km, dtype=np.float64)
    n = d.size
    if n == 0:
        return {str(t): (0.0, 0.0) for t in THRESHOLDS_KM}
    rng = np.random.default_rng(seed)
    hits = np.stack([d <= t for t in THRESHOLDS_KM], axis=1).astype(np.float32)  # (N, T)
    out: dict[str, tuple[float, float]] = {}
    # Resample in chunks so 25k images x 1000 resamples stays within a few MB at a time.
    means = []
    for start in range(0, n_boot, 100):
        idx = rng.integers(0, n, size=(min(100, n_boot - start), n))
        means.append(hits[idx].mean(axis=1))
    boot = np.concatenate(means) * 100.0
    for j, t in enumerate(THRESHOLDS_KM):
        lo, hi = np.percentile(boot[:, j], [2.5, 97.5])
        out[str(t)] = (float(lo), float(hi))
    return out


def evaluate(gt: GroundTruth, preds: Predictions, *, n_boot: int = 1000) -> EvalResult:
    """Score ``preds`` against ``gt``, matching images by id (see :func:`image_key`).

    Predictions for images outside the benchmark are ignored and counted in
    ``extra_predictions``; benchmark images without a prediction count as wrong.
    """
    index = {key: i for i, key in enumerate(gt.keys)}
    pred = np.full((len(gt), 2), np.nan)
    extra = 0
    for pid, coord in zip(preds.ids, preds.coords, strict=True):
        i = index.get(image_key(pid))
        if i is None:
            extra += 1
        else:
            pred[i] = coord
    has = ~np.isnan(pred).any(axis=1)
    dist = np.full(len(gt), np.inf)
    dist[has] = haversine_km(gt.coords[has], pred[has])
    covered = dist[has]
    geoscore = float(np.mean(5000.0 * np.exp(-dist / GEOSCORE_SCALE_KM))) if len(gt) else 0.0
    return EvalResult(
        benchmark=gt.name,
        n=len(gt),
        n_predicted=int(has.sum()),
        accuracy=accuracy_table(dist),
        median_km=float(np.median(covered)) if covered.size else None,
        mean_km=float(np.mean(covered)) if covered.size else None,
        geoscore=geoscore,
        ci95=bootstrap_ci(dist, n_boot=n_boot),
        extra_predictions=extra,
        distances_km=dist,
        coords_true=gt.coords,
        coords_pred=pred,
        missing_ids=[gt.ids[i] for i in np.flatnonzero(~has)],
        published=dict(preds.published),
    )
