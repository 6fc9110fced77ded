"""End-to-end prediction: :class:`Geolocator` composed from a :class:`GeolocatorConfig`."""

from terraloc.pipeline.geolocator import PRESETS, Geolocator, GeolocatorConfig
from terraloc.pipeline.types import ImagePrediction, Prediction

__all__ = ["PRESETS", "Geolocator", "GeolocatorConfig", "ImagePrediction", "Prediction"]
