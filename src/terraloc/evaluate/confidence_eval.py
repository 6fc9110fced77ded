"""Calibration figures of predictions that carry ``confidence`` (``terraloc eval``), and the
matched (features, error) pairs ``terraloc calibrate`` fits on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.evaluate.benchmarks import GroundTruth
from terraloc.evaluate.calibration import calibration_report
from terraloc.evaluate.ids import image_key
from terraloc.evaluate.predictions import Predictions
from terraloc.geo import haversine_km

THRESHOLDS = (1, 25, 200, 750, 2500)


@dataclass
class Matched:
    """Predictions with an answer and ground truth, row-aligned."""

    rows: NDArray[np.int64]  # indices into the Predictions
    errors_km: NDArray[np.float64]


def match(gt: GroundTruth, preds: Predictions) -> Matched:
    """Rows of ``preds`` that have a location (not abstained) and an image in ``gt``, with their errors."""
    index = {k: i for i, k in enumerate(gt.keys)}
    ab = preds.extras.abstained if preds.extras is not None else np.zeros(len(preds), dtype=bool)
    rows, truth = [], []
    for r, pid in enumerate(preds.ids):
        i = index.get(image_key(pid))
        if i is None or ab[r] or not np.isfinite(preds.coords[r]).all():
            continue
        rows.append(r)
        truth.append(gt.coords[i])
    idx = np.asarray(rows, dtype=np.int64)
    err = haversine_km(preds.coords[idx], np.asarray(truth).reshape(-1, 2)) if rows else np.zeros(0)
    return Matched(idx, np.asarray(err, dtype=np.float64))


def confidence_metrics(gt: GroundTruth, preds: Predictions) -> dict[str, Any] | None:
    """Calibration report over the matched photos that carry a confidence; ``None`` when none does."""
    if preds.extras is None or preds.extras.confidence is None:
        return None
    m = match(gt, preds)
    conf = preds.extras.confidence[m.rows]
    has = np.isfinite(conf).all(axis=1)
    if not has.any():
        return None
    rep = calibration_report(conf[has], m.errors_km[has], THRESHOLDS)
    rep["abstained"] = int(preds.extras.abstained.sum())
    return rep


def training_pairs(
    gt: GroundTruth, preds: Predictions
) -> tuple[tuple[str, ...], NDArray[np.float64], NDArray[np.float64], Any]:
    """``(feature names, (N, F) features, (N,) errors km, identity)`` for ``terraloc calibrate``.

    Raises:
        InputError: no features in the file, mixed or missing configurations, a NaN feature
            (naming the image).
    """
    ex = preds.extras
    if ex is None or ex.features is None:
        raise InputError(
            "predictions carry no confidence features (write them with `terraloc predict --format jsonl` "
            "or `terraloc rag eval --out DIR`)",
            path=preds.path,
        )
    m = match(gt, preds)
    names, values = ex.features
    x = values[m.rows]
    bad = ~np.isfinite(x)
    if bad.any():
        r, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"confidence feature '{names[j]}' of image {preds.ids[int(m.rows[r])]} is not a finite number",
            path=preds.path,
        )
    from terraloc.confidence.calibrator import identity_key
    from terraloc.confidence.identity import pipeline_identity

    idents = [ex.identity[int(r)] for r in m.rows]
    if any(i is None or i == "" for i in idents):
        raise InputError("predictions do not say which configuration produced them (no model/config)", path=preds.path)
    full = [pipeline_identity(i) if isinstance(i, dict) else str(i) for i in idents]
    keys = {identity_key(i) for i in full}
    if len(keys) > 1:
        raise InputError(
            f"predictions come from {len(keys)} different configurations; fit one calibrator per configuration",
            path=preds.path,
        )
    return tuple(names), x, m.errors_km, full[0] if full else None
