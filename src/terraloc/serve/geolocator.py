"""Serve a :class:`terraloc.pipeline.Geolocator`: the adapter to the service's Predictor protocol."""

from __future__ import annotations

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
    config: Any = None, source: str | Path | None = None, *, device: str = "cpu", **options: Any
) -> Callable[[], Predictor]:
    """A zero-argument callable that builds the Geolocator (run in the server's background thread).

    Args:
        config: a resolved ``GeolocatorConfig`` (``terraloc.pipeline.resolve_config``, the same
            resolution ``terraloc predict`` uses); default: resolved from ``options``.
        source: the ``config.json`` it came from, named in errors.
        device: where the backbone runs (:meth:`Geolocator.to`).
        **options: ``resolve_config`` options (``model``, ``backbone``, ``head``, ``db``, ...)
            when ``config`` is not given.
    """

    def load() -> Predictor:
        from terraloc.pipeline import Geolocator, resolve_config

        cfg, src = (config, source) if config is not None else resolve_config(**options)
        return GeolocatorPredictor(Geolocator(cfg, source=src).to(device))

    return load
