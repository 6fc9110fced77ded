"""Serve a :class:`terraloc.pipeline.Geolocator`: the adapter to the service's Predictor protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from terraloc.serve.predictor import Predictor


class GeolocatorPredictor:
    """Wrap a ``Geolocator`` so the service returns exactly what ``terraloc predict --format json`` prints.

    Args:
        geolocator: a loaded ``terraloc.pipeline.Geolocator``.
    """

    def __init__(self, geolocator: Any) -> None:
        self.geolocator = geolocator

    def predict(self, images: list[Image.Image], top_k: int) -> list[dict[str, Any]]:
        """Predict decoded RGB images; one JSON-ready dict per image (``ImagePrediction.to_json()``)."""
        preds = self.geolocator.predict(images, top_k=top_k)
        if not isinstance(preds, list):
            preds = [preds]
        return [p.to_json() for p in preds]

    def describe(self) -> dict[str, Any]:
        """Model ids, weight hashes and configuration of the geolocator."""
        describe = getattr(self.geolocator, "describe", None)
        if callable(describe):
            return dict(describe())
        return {"model": getattr(self.geolocator, "model_info", {})}


def geolocator_loader(backbone: str | None = None, device: str | None = None) -> Callable[[], Predictor]:
    """A zero-argument callable loading the default Geolocator (optionally with another backbone)."""

    def load() -> Predictor:
        from terraloc.pipeline import Geolocator

        kwargs: dict[str, Any] = {}
        if backbone:
            kwargs["backbone"] = backbone
        if device:
            kwargs["device"] = device
        return GeolocatorPredictor(Geolocator.from_pretrained("geoclip", **kwargs))

    return load
