"""Choosing and fitting a calibrator by cross-validation (``terraloc calibrate``).

Procedure (all folds are seeded random splits of the photos):

1. For each family (isotonic, logistic, gbm) compute 5-fold out-of-fold probabilities (three
   differently seeded splits, pooled) and score them by the mean Brier score over the five
   thresholds; among the families within 1% of the lowest, the one whose worst threshold has the
   lowest expected calibration error wins (Brier barely moves with a few points of
   miscalibration).
2. Refit the winner on all photos.
3. The figures reported for the whole procedure are *nested*: an outer 5-fold split, and inside
   each outer training part step 1 again, so the family choice never sees the photos it is
   scored on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.confidence.calibrator import FAMILIES, THRESHOLDS_KM, Calibrator, apply_models, check_features, fit_models
from terraloc.errors import InputError
from terraloc.evaluate.calibration import calibration_report, ece

MIN_PHOTOS = 100
FOLDS = 5
BRIER_TOLERANCE = 0.01
REPEATS = 3


def fold_ids(n: int, folds: int = FOLDS, seed: int = 0) -> NDArray[np.int64]:
    """``(n,)`` fold of each photo: a seeded permutation taken modulo ``folds``."""
    return np.asarray(np.random.default_rng(seed).permutation(n) % folds, dtype=np.int64)


def out_of_fold(
    family: str,
    x: NDArray[np.float64],
    err: NDArray[np.float64],
    names: tuple[str, ...],
    folds: int = FOLDS,
    seed: int = 0,
) -> NDArray[np.float64]:
    """``(N, T)`` probabilities, each photo's from a model fitted without its fold."""
    f = fold_ids(len(err), folds, seed)
    out = np.zeros((len(err), len(THRESHOLDS_KM)))
    for k in range(folds):
        te = f == k
        out[te] = apply_models(fit_models(family, x[~te], err[~te], names), x[te])
    return out


def _max_ece(p: NDArray[np.float64], err: NDArray[np.float64]) -> float:
    return float(np.max([ece(p[:, j], (err <= t).astype(np.float64)) for j, t in enumerate(THRESHOLDS_KM)]))


def _score(p: NDArray[np.float64], err: NDArray[np.float64]) -> float:
    y = err[:, None] <= np.asarray(THRESHOLDS_KM, dtype=np.float64)[None, :]
    return float(np.mean((p - y) ** 2))


def choose_family(
    x: NDArray[np.float64],
    err: NDArray[np.float64],
    names: tuple[str, ...],
    families: tuple[str, ...] = FAMILIES,
    folds: int = FOLDS,
    seed: int = 0,
    repeats: int = REPEATS,
) -> tuple[str, dict[str, NDArray[np.float64]]]:
    """The family chosen by repeated cross-validation, and every family's pooled out-of-fold
    probabilities (``(repeats * N, T)``, the repeats stacked; score them against ``err`` tiled).

    Each family's out-of-fold probabilities of ``repeats`` differently seeded splits are pooled;
    among the families whose mean Brier score is within :data:`BRIER_TOLERANCE` of the best, the
    one whose worst threshold has the lowest ECE wins. Pooling repeats makes the choice less of a
    coin toss between families whose figures differ by less than their noise.
    """
    oofs = {fam: [out_of_fold(fam, x, err, names, folds, seed + 1000 * r) for r in range(repeats)] for fam in families}
    pooled_err = np.concatenate([err] * repeats)
    pooled = {fam: np.concatenate(v) for fam, v in oofs.items()}
    scores = {fam: _score(pooled[fam], pooled_err) for fam in families}
    low = min(scores.values())
    near = [fam for fam in families if scores[fam] <= low * (1 + BRIER_TOLERANCE)]
    best = min(near, key=lambda fam: (_max_ece(pooled[fam], pooled_err), scores[fam]))
    return best, pooled


@dataclass
class CalibrationFit:
    """What :func:`fit_calibrator` produced."""

    calibrator: Calibrator
    report: dict[str, Any]
    nested_probs: NDArray[np.float64]  # (N, T) out-of-fold probabilities of the whole procedure


def fit_calibrator(
    x: NDArray[np.float64],
    errors_km: NDArray[np.float64],
    names: tuple[str, ...],
    identity: dict[str, Any] | str,
    *,
    families: tuple[str, ...] = FAMILIES,
    folds: int = FOLDS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CalibrationFit:
    """Choose a family by cross-validation, fit it on everything, report nested-CV figures.

    Args:
        x: ``(N, F)`` confidence features (finite).
        errors_km: ``(N,)`` great-circle error of each photo's answer (``inf`` = no answer).
        names: the ``F`` feature names.
        identity: the head configuration the predictions came from.

    Raises:
        InputError: fewer than :data:`MIN_PHOTOS` photos, or non-finite features.
    """
    check_features(x, names)
    n = len(errors_km)
    if n < MIN_PHOTOS:
        raise InputError(
            f"only {n} photos with both a prediction and ground truth; at least {MIN_PHOTOS} are needed "
            f"to fit and {folds}-fold cross-validate a calibrator"
        )
    say = progress or (lambda _m: None)
    say("choosing the family by cross-validation")
    best, oof = choose_family(x, errors_km, names, families, folds, seed)
    per_family = {}
    pooled_err = np.tile(errors_km, REPEATS)
    for fam, p in oof.items():
        rep = calibration_report(p, pooled_err, THRESHOLDS_KM)
        per_family[fam] = {k: rep[k] for k in ("ece", "brier", "brier_skill")} | {
            "mean_brier": round(_score(p, pooled_err), 5)
        }
    say("nested cross-validation of the whole procedure")
    outer = fold_ids(n, folds, seed + 1)
    nested = np.zeros((n, len(THRESHOLDS_KM)))
    chosen = []
    for k in range(folds):
        te = outer == k
        fam, _ = choose_family(x[~te], errors_km[~te], names, families, folds, seed)
        chosen.append(fam)
        nested[te] = apply_models(fit_models(fam, x[~te], errors_km[~te], names), x[te])
    report = {
        "chosen": best,
        "folds": folds,
        "seed": seed,
        "n_photos": n,
        "criterion": "3x5-fold out-of-fold: lowest worst-threshold ECE among families within 1% of the best mean Brier",
        "families": per_family,
        "nested": calibration_report(nested, errors_km, THRESHOLDS_KM) | {"chosen_per_fold": chosen},
    }
    cal = Calibrator.fit(best, x, errors_km, names, identity)
    cal.report = report
    return CalibrationFit(cal, report, nested)
