"""Calibrators: confidence features -> ``P(error <= t)`` for t in 1/25/200/750/2500 km.

Monotone across thresholds by construction (a chain of conditional probabilities):

    h_j(x) = P(error <= t_j | error > t_{j-1}, x)          (one binary model per threshold,
                                                              fitted on the photos beyond t_{j-1})
    P(error <= t_j | x) = 1 - prod_{i <= j} (1 - h_i(x))

Each factor is in ``[0, 1]``, so ``P(<= t_j)`` can only grow with ``j``, whatever the models.
(Per-threshold models of ``P(<= t_j)`` made monotone by a running maximum were tried too: nested
cross-validation over three fold seeds on the G3 dev file gave them a slightly worse mean and worst
ECE, see ``docs/confidence.md``.)

A calibrator is saved as JSON (no pickle): the thresholds, the feature names it reads, the
model family and each threshold's model as arrays, the cross-validated report, and the
*identity* of the head configuration it was fitted for. :meth:`Calibrator.check_identity`
refuses to apply it to predictions from another head or configuration.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.confidence.binary import (
    BinaryModel,
    BoostedTrees,
    ConstantModel,
    IsotonicModel,
    LogisticModel,
    model_from_json,
)
from terraloc.errors import InputError, MissingResourceError

THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
FAMILIES: tuple[str, ...] = ("isotonic", "logistic", "gbm")
FORMAT = "terraloc-calibrator"
FORMAT_VERSION = 1
MIN_CLASS = 8  # fewer positives or negatives than this at a threshold: a constant model there


def identity_key(identity: Mapping[str, Any] | str) -> str:
    """A 16-hex-digit key of a head configuration (SHA-256 of its canonical JSON), or the key itself."""
    if isinstance(identity, str):
        return identity
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fit_binary(family: str, x: NDArray[np.float64], y: NDArray[np.float64], iso_column: int) -> BinaryModel:
    pos = float(y.sum())
    if pos < MIN_CLASS or len(y) - pos < MIN_CLASS:
        return ConstantModel.fit(x, y)
    if family == "isotonic":
        return IsotonicModel.fit(x, y, iso_column)
    if family == "logistic":
        return LogisticModel.fit(x, y)
    if family == "gbm":
        return BoostedTrees.fit(x, y)
    raise ValueError(f"unknown calibrator family {family!r}; choose one of {', '.join(FAMILIES)}")


def isotonic_column(names: tuple[str, ...] | list[str], t: int) -> int:
    """The one feature isotonic regression reads at threshold ``t``: the probability mass within
    ``t`` km of the answer (the first feature when that is absent)."""
    name = f"mass_{t}km"
    return list(names).index(name) if name in names else 0


def chain(h: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, T)`` conditional probabilities -> ``(N, T)`` cumulative ``P(<= t_j)``, non-decreasing in j."""
    return np.asarray(1.0 - np.cumprod(1.0 - np.clip(h, 0.0, 1.0), axis=1))


def fit_models(
    family: str, x: NDArray[np.float64], errors_km: NDArray[np.float64], names: tuple[str, ...]
) -> list[BinaryModel]:
    """One conditional model per threshold (see the module docstring)."""
    models: list[BinaryModel] = []
    prev = -math.inf
    for t in THRESHOLDS_KM:
        keep = errors_km > prev
        y = (errors_km[keep] <= t).astype(np.float64)
        models.append(_fit_binary(family, x[keep], y, isotonic_column(names, t)))
        prev = t
    return models


def apply_models(models: list[BinaryModel], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, T)`` cumulative probabilities from the per-threshold conditional models."""
    if x.shape[0] == 0:
        return np.zeros((0, len(models)))
    return chain(np.stack([m.predict(x) for m in models], axis=1))


@dataclass
class Calibrator:
    """Maps confidence features to ``P(error <= t)`` for each threshold.

    Attributes:
        feature_names: the features it reads, in order.
        family: ``isotonic``, ``logistic`` or ``gbm``.
        models: one conditional model per threshold.
        identity: the head configuration it was fitted for (a dict, or only its key).
        report: cross-validated figures from ``terraloc calibrate`` (free-form JSON).
        n_photos: photos it was fitted on.
    """

    feature_names: tuple[str, ...]
    family: str
    models: list[BinaryModel]
    identity: dict[str, Any] | str
    report: dict[str, Any] = field(default_factory=dict)
    n_photos: int = 0
    thresholds_km: tuple[int, ...] = THRESHOLDS_KM

    @property
    def key(self) -> str:
        return identity_key(self.identity)

    @classmethod
    def fit(
        cls,
        family: str,
        features: NDArray[np.float64],
        errors_km: NDArray[np.float64],
        feature_names: tuple[str, ...],
        identity: dict[str, Any] | str,
    ) -> Calibrator:
        """Fit ``family`` on ``(N, F)`` features and ``(N,)`` errors in km (``inf`` = no prediction)."""
        check_features(features, feature_names)
        models = fit_models(family, features, errors_km, feature_names)
        return cls(tuple(feature_names), family, models, identity, n_photos=int(features.shape[0]))

    def predict(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(N, F)`` features in :attr:`feature_names` order -> ``(N, T)`` probabilities."""
        check_features(features, self.feature_names)
        return apply_models(self.models, features)

    def predict_dicts(self, features: NDArray[np.float64]) -> list[dict[str, float]]:
        """Per image ``{"1": p, "25": p, ...}`` (rounded to 4 decimals)."""
        p = self.predict(features)
        return [{str(t): round(float(v), 4) for t, v in zip(self.thresholds_km, row, strict=True)} for row in p]

    def check_identity(self, identity: Mapping[str, Any] | str, what: str = "these predictions") -> None:
        """Raise :class:`InputError` unless ``identity`` is the configuration this was fitted for."""
        key = identity_key(identity)
        if key != self.key:
            mine = self.identity.get("head", "?") if isinstance(self.identity, dict) else "?"
            theirs = identity.get("head", "?") if isinstance(identity, Mapping) else "?"
            raise InputError(
                f"the calibrator was fitted for head '{mine}' (configuration {self.key}); {what} come from "
                f"head '{theirs}' (configuration {key}); fit one for this configuration with terraloc calibrate"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "thresholds_km": list(self.thresholds_km),
            "structure": "chain: P(<=t_j) = 1 - prod_{i<=j} (1 - P(<=t_i | > t_{i-1}))",
            "family": self.family,
            "feature_names": list(self.feature_names),
            "identity": self.identity,
            "identity_key": self.key,
            "n_photos": self.n_photos,
            "models": [m.to_json() for m in self.models],
            "report": self.report,
        }

    @classmethod
    def from_json(cls, obj: Any, source: str = "calibrator") -> Calibrator:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise InputError('not a terraloc calibrator (no "format": "terraloc-calibrator")', path=source)
        if obj.get("version") != FORMAT_VERSION:
            raise InputError(f"calibrator format version {obj.get('version')} is not supported", path=source)
        try:
            if tuple(int(t) for t in obj["thresholds_km"]) != THRESHOLDS_KM:
                raise InputError(f"thresholds {obj['thresholds_km']} differ from {list(THRESHOLDS_KM)}", path=source)
            models = [model_from_json(m) for m in obj["models"]]
            if len(models) != len(THRESHOLDS_KM):
                raise InputError(f"expected {len(THRESHOLDS_KM)} models, found {len(models)}", path=source)
            identity = obj["identity"]
            cal = cls(
                tuple(str(n) for n in obj["feature_names"]),
                str(obj["family"]),
                models,
                identity if isinstance(identity, dict) else str(identity),
                dict(obj.get("report", {})),
                int(obj.get("n_photos", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"malformed calibrator: {exc!r}", path=source) from None
        if obj.get("identity_key") not in (None, cal.key):
            raise InputError("identity_key does not match the stored identity (edited file?)", path=source)
        return cal

    def save(self, path: str | Path) -> None:
        from terraloc.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, identity: Mapping[str, Any] | str | None = None) -> Calibrator:
        """Read a calibrator; with ``identity``, refuse one fitted for another configuration."""
        path = Path(path)
        if not path.is_file():
            raise MissingResourceError(f"{path}: calibrator file not found")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"not JSON: {exc}", path=path) from None
        cal = cls.from_json(obj, str(path))
        if identity is not None:
            cal.check_identity(identity)
        return cal


def check_features(x: NDArray[np.float64], names: tuple[str, ...] | list[str]) -> None:
    """Shape and finiteness checks; a NaN or infinite feature is an :class:`InputError` naming it."""
    if x.ndim != 2 or x.shape[1] != len(names):
        raise InputError(f"expected {len(names)} confidence features per image, got array of shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"confidence feature '{names[j]}' is not a finite number (image #{i}: {x[i, j]})")
