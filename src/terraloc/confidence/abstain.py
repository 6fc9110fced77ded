"""``--min-confidence T:P``: abstain when ``P(error <= T km) < P``."""

from __future__ import annotations

from dataclasses import dataclass

from terraloc.confidence.calibrator import THRESHOLDS_KM
from terraloc.errors import InputError


@dataclass(frozen=True)
class MinConfidence:
    """Answer only when ``confidence[str(threshold_km)] >= probability``."""

    threshold_km: int
    probability: float

    def accepts(self, confidence: dict[str, float] | None) -> bool:
        if confidence is None:
            return False
        return float(confidence[str(self.threshold_km)]) >= self.probability

    def reason(self, confidence: dict[str, float]) -> str:
        p = float(confidence[str(self.threshold_km)])
        return f"P(within {self.threshold_km} km) = {p:.2f} is below the minimum {self.probability:.2f}"

    def __str__(self) -> str:
        return f"{self.threshold_km}:{self.probability:g}"


def parse_min_confidence(text: str | None) -> MinConfidence | None:
    """``"25:0.8"`` -> ``MinConfidence(25, 0.8)``; ``None``/empty -> ``None``; anything else: InputError."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).split(":")
    try:
        t, p = int(parts[0]), float(parts[1])
        if len(parts) != 2:
            raise ValueError
    except (ValueError, IndexError):
        raise InputError(f"expected KM:PROBABILITY such as 25:0.8, got '{text}'", field="min-confidence") from None
    if t not in THRESHOLDS_KM:
        raise InputError(f"threshold {t} km is not one of {', '.join(map(str, THRESHOLDS_KM))}", field="min-confidence")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"probability {p} is outside [0, 1]", field="min-confidence")
    return MinConfidence(t, p)
