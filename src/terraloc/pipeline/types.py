"""Typed, JSON-ready prediction results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One candidate location for an image.

    Attributes:
        rank: 1 = most probable.
        lat, lon: degrees (WGS-84), lon in ``[-180, 180]``.
        probability: the head's probability (GeoCLIP: softmax over the gallery; reference
            database: share of the neighbours' similarity weight), in ``[0, 1]``.
        city, admin1, country, country_code: nearest GeoNames place (offline), or "".
        evidence: where the head found this candidate (see ``terraloc.models.head.Candidates``);
            Python API only, not part of :meth:`to_json`.
    """

    rank: int
    lat: float
    lon: float
    probability: float
    city: str = ""
    admin1: str = ""
    country: str = ""
    country_code: str = ""
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("evidence")
        return d


@dataclass(frozen=True)
class ImagePrediction:
    """All candidates for one input image, or the error that stopped it.

    Attributes:
        image: the input as given (path string, or ``"<bytes #i>"`` / ``"<image #i>"``).
        candidates: ranked :class:`Prediction` list (empty on error).
        error: one-line message when the image could not be processed, else ``None``.
        model: which weights produced the result: ``{"head", "backbone": {"id", "hash", "dim"}, ...}``.
        width, height: decoded size in pixels (after EXIF orientation), when decoded.
        confidence: calibrated ``{"1": P(error <= 1 km), "25": ..., "2500": ...}`` of the rank-1
            answer, when the geolocator has a calibrator (``None`` otherwise).
        abstained: the answer fell below ``--min-confidence``: no candidates are given (the
            confidence still is), and ``terraloc eval`` counts the image as not predicted.
        region: the 90% confidence region ``{"places": [[lat, lon], ...], "level", "covered",
            "radius_km"}`` (see :mod:`terraloc.confidence.region`), or ``None``.
        features: the confidence features of the answer (what ``terraloc calibrate`` fits on).
    """

    image: str
    candidates: list[Prediction] = field(default_factory=list)
    error: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    confidence: dict[str, float] | None = None
    abstained: bool = False
    region: dict[str, Any] | None = None
    features: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> Prediction | None:
        """The rank-1 candidate, if any."""
        return self.candidates[0] if self.candidates else None

    def to_json(self) -> dict[str, Any]:
        """``{"image", "lat", "lon", "probability", "city", "admin1", "country", "candidates", "error", "model"}``.

        ``lat``/``lon`` are the rank-1 candidate's (``null`` on error), so the object is also a
        line ``terraloc eval`` reads.
        """
        t = self.top
        return {
            "image": self.image,
            "lat": t.lat if t else None,
            "lon": t.lon if t else None,
            "probability": t.probability if t else None,
            "city": t.city if t else None,
            "admin1": t.admin1 if t else None,
            "country": t.country if t else None,
            "candidates": [c.to_json() for c in self.candidates],
            "error": self.error,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "confidence": self.confidence,
            "abstained": self.abstained,
            "region": self.region,
            "features": self.features,
        }
