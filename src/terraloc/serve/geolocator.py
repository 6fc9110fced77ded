"""Serve a :class:`terraloc.pipeline.Geolocator`: the adapter to the service's Predictor protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from terraloc.serve.predictor import Predictor


class GeolocatorPredictor:
    """Wrap a ``Geolocator`` so the service returns exactly what ``terraloc predict --format json`` prints
    (one ``ImagePrediction.to_json()`` object per image).

    Args:
        geolocator: a loaded ``terraloc.pipeline.Geolocator``.
    """

    def __init__(self, geolocator: Any) -> None:
        self.geolocator = geolocator

    def predict(self, images: list[Image.Image], top_k: int) -> list[dict[str, Any]]:
        """Predict decoded RGB images; one JSON-ready dict per image, in order."""
        return [p.to_json() for p in self.geolocator.predict(list(images), top_k=top_k)]

    def describe(self) -> dict[str, Any]:
        """``{"model": <what predictions record>, "config": <GeolocatorConfig>}``."""
        return {"model": self.geolocator.model_info, "config": self.geolocator.config.to_json()}


def geolocator_loader(
    backbone: str | None = None,
    head: str | None = None,
    db: str | None = None,
    ten_crop: bool = False,
    places: bool = True,
    calibrator: str | None = None,
    min_confidence: str | None = None,
    distinct_km: float = 25.0,
) -> Callable[[], Predictor]:
    """A zero-argument callable that builds the Geolocator the way ``terraloc predict`` does
    (same defaults: the GeoCLIP head, or the reference-database head when ``db`` is given)."""

    def load() -> Predictor:
        from terraloc.pipeline import Geolocator, GeolocatorConfig

        head_ = head or ("refdb" if db else "geoclip")
        backbone_ = backbone
        if backbone_ is None:
            manifest = Path(db) / "manifest.json" if db else None
            if head_ == "refdb" and manifest is not None and manifest.exists():
                backbone_ = json.loads(manifest.read_text())["backbone"]["id"]
            else:
                backbone_ = "clip-vit-large-patch14"
        config = GeolocatorConfig(
            backbone=backbone_,
            head=head_,
            refdb=db,
            ten_crop=ten_crop,
            places=places,
            calibrator=calibrator,
            min_confidence=min_confidence,
            distinct_km=distinct_km,
        )
        return GeolocatorPredictor(Geolocator(config))

    return load
