"""Evaluation exactly as the papers do it: benchmark readers, metrics, reports.

Depends on :mod:`terraloc.geo` only.
"""

from terraloc.evaluate.benchmarks import BENCHMARKS, GroundTruth, load_benchmark, load_ground_truth_csv, load_truth
from terraloc.evaluate.metrics import THRESHOLD_KEYS, THRESHOLDS_KM, EvalResult, evaluate
from terraloc.evaluate.predictions import Predictions, load_predictions

__all__ = [
    "BENCHMARKS",
    "THRESHOLDS_KM",
    "THRESHOLD_KEYS",
    "EvalResult",
    "GroundTruth",
    "Predictions",
    "evaluate",
    "load_benchmark",
    "load_ground_truth_csv",
    "load_predictions",
    "load_truth",
]
