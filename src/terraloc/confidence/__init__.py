"""Calibrated confidence: how likely each prediction is to be right, and when to abstain.

* :mod:`~terraloc.confidence.features`: agreement features of any head's candidates;
* :mod:`~terraloc.confidence.binary`, :mod:`~terraloc.confidence.calibrator`: models mapping
  them to ``P(error <= t)`` for t in 1/25/200/750/2500 km, monotone in t by construction, saved
  as JSON with the head configuration they belong to;
* :mod:`~terraloc.confidence.fitting`: choosing the model family by cross-validation;
* :mod:`~terraloc.confidence.distinct`: merging candidates into distinct places;
* :mod:`~terraloc.confidence.region`: the 90% confidence region;
* :mod:`~terraloc.confidence.abstain`: ``--min-confidence 25:0.8`` rules.

Depends on :mod:`terraloc.geo` and numpy only (and :mod:`terraloc.evaluate.calibration` for
the cross-validated report).
"""

from terraloc.confidence.abstain import MinConfidence, parse_min_confidence
from terraloc.confidence.calibrator import THRESHOLDS_KM, Calibrator, identity_key
from terraloc.confidence.distinct import DEFAULT_RADIUS_KM, merge_distinct
from terraloc.confidence.features import FEATURE_DOC, Features, confidence_features
from terraloc.confidence.region import confidence_region

__all__ = [
    "DEFAULT_RADIUS_KM",
    "FEATURE_DOC",
    "THRESHOLDS_KM",
    "Calibrator",
    "Features",
    "MinConfidence",
    "confidence_features",
    "confidence_region",
    "identity_key",
    "merge_distinct",
    "parse_min_confidence",
]
