"""End-to-end prediction: :class:`Geolocator` composed from a :class:`GeolocatorConfig`."""

from terraloc.pipeline.config import GeolocatorConfig
from terraloc.pipeline.geolocator import PRESETS, Geolocator
from terraloc.pipeline.resolve import resolve_config
from terraloc.pipeline.types import ImagePrediction, Prediction

__all__ = ["PRESETS", "Geolocator", "GeolocatorConfig", "ImagePrediction", "Prediction", "resolve_config"]
